"""One run → a Workflow Run RO-Crate conforming to Provenance Run Crate 0.5 (``rocrate``).

The crate (RO-Crate 1.1, with the ``workflow-run`` terms) holds:

* the spec as main entity (``File``, ``SoftwareSourceCode``, ``ComputationalWorkflow``,
  ``HowTo``) under ``workflow/``, beside the step programs its commands run;
* per step a ``HowToStep`` (``position`` in dependency order) whose ``workExample`` is the
  step's tool, a ``SoftwareApplication`` with its ``FormalParameter`` inputs and outputs and
  the container image it declares;
* the engine (twinprov, which requires Apache Airflow) and an ``OrganizeAction`` for its work,
  whose ``object`` is one ``ControlAction`` per step and whose ``result`` is the workflow run,
  a ``CreateAction`` with the parameter values and the data read (``object``) and written
  (``result``);
* one ``CreateAction`` per task try (tool as ``instrument``, inputs, outputs, times, status,
  error, container image, resource usage);
* every file under ``workspace/`` (its path in the run workspace) with ``sha256``,
  ``contentSize`` and ``encodingFormat``; files above the copy threshold are referenced by
  their checksum instead (``#sha256-…``, the path they were written to as ``contentUrl``, a
  hint); bytes overwritten since the run are described
  without a payload (``#sha256-…``);
* the PROV files (``about`` the run) and data-quality reports (``about`` their file).

Identifiers are derived from names, never random, and lists are sorted, so building the same
input twice yields the same ``ro-crate-metadata.json`` except ``datePublished``. The crate is
written to a temporary sibling folder and renamed into place.

The work is split by concern: :mod:`~twinprov.ro_crates.crate_plan` (what is copied, referenced
or only described), :mod:`~twinprov.ro_crates.crate_workflow` and
:mod:`~twinprov.ro_crates.crate_actions` (describing the workflow and the run, on the graph of
:mod:`~twinprov.ro_crates.crate_graph`, ordered by :mod:`~twinprov.ro_crates.crate_describe`),
:mod:`~twinprov.ro_crates.crate_write` (the atomic write); every rocrate internal it relies on
is in :mod:`~twinprov.ro_crates._rocrate_compat`. This module is the public face.
"""

from __future__ import annotations

__all__ = [
    "ACTION_STATUS",
    "PROFILES",
    "CrateBuild",
    "build_crate",
    "preview_template",
    "write_crate",
]

from twinprov.ro_crates._rocrate_compat import preview_template
from twinprov.ro_crates.crate_terms import ACTION_STATUS, PROFILES
from twinprov.ro_crates.crate_write import CrateBuild, build_crate, write_crate
