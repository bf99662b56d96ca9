"""A CWL document as the crate's main workflow (Workflow RO-Crate, ``programmingLanguage`` CWL).

Reads the document with cwl-utils (through :mod:`twinprov.provenance.cwl_doc`); ships it, and
the tool documents its steps run, beside the crate's ``workflow/`` folder.
"""

from __future__ import annotations

__all__ = ["cwl_workflow_info"]

from pathlib import Path

from twinprov.provenance.cwl_doc import (
    CWL_SCALAR_TYPES,
    dag_steps,
    document_files,
    load_cwl,
    step_sources,
)
from twinprov.provenance.errors import CwlError
from twinprov.provenance.hashing import sha256_file
from twinprov.ro_crates.errors import CrateInputError, SpecChangedError
from twinprov.ro_crates.model import (
    ParamSpec,
    SourceFile,
    StepInput,
    StepOutput,
    StepSpec,
    WorkflowInfo,
)

_PARAM_TYPES = CWL_SCALAR_TYPES


def _type_name(cwl_type: object) -> str:
    if isinstance(cwl_type, str):
        return _PARAM_TYPES.get(cwl_type.rstrip("?"), cwl_type.rstrip("?"))
    if isinstance(cwl_type, list):
        named = [t for t in cwl_type if t != "null"]
        return _type_name(named[0]) if len(named) == 1 else "Any"
    return "Any"


def _literal(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def cwl_workflow_info(cwl_path: str, recorded_sha256: str | None = None) -> WorkflowInfo:
    """The prospective part of a crate, read from a CWL document.

    Raises:
        CrateInputError: the document cannot be read or parsed.
        SpecChangedError: its bytes differ from ``recorded_sha256``.
    """
    path = Path(str(cwl_path).split("#", 1)[0])
    try:
        current, _size = sha256_file(path)
    except OSError as e:
        raise CrateInputError(f"cannot read the CWL document {path}: {e.strerror}") from e
    if recorded_sha256 and current != recorded_sha256:
        raise SpecChangedError(str(path), recorded_sha256, current)
    try:
        doc = load_cwl(cwl_path)
    except CwlError as e:
        raise CrateInputError(str(e)) from e
    root = path.resolve().parent
    inputs = {i.name for i in doc.inputs}
    steps = []
    sources: list[SourceFile] = []
    for run_file in document_files(doc):  # the tool documents it runs, from its folder
        if run_file.is_relative_to(root):
            digest, size = sha256_file(run_file)
            rel = run_file.relative_to(root).as_posix()
            sources.append(SourceFile(rel, run_file, digest, size, "application/x-cwl"))
    # a subworkflow shown as a task group: its step, then its steps (task ids group.step)
    for position, d in enumerate(dag_steps(doc)):
        s = d.step
        ins = step_sources(d.doc, s.id)
        folder = "/".join(f"cwl/{part}" for part in (*d.scope, s.id))
        steps.append(
            StepSpec(
                id=d.task_id,
                position=position,
                description=s.doc,
                image=s.image,
                command=(s.kind, s.run),
                target="local",
                inputs=tuple(StepInput(name, src) for name, src in ins),
                outputs=tuple(
                    StepOutput(
                        name,
                        f"{folder}/ (collected by cwltool)",
                        "inode/directory" if "Directory" in t else "application/octet-stream",
                    )
                    for name, t in s.outputs
                ),
                params=tuple(sorted({src for _, src in ins if src in inputs and not d.scope})),
            )
        )
    return WorkflowInfo(
        name=doc.label or path.stem,
        version=doc.cwl_version,
        spec_path=path.resolve(),
        spec_sha256=current,
        steps=tuple(steps),
        description=doc.doc,
        params=tuple(
            ParamSpec(i.name, _type_name(i.type), _literal(i.default), i.doc) for i in doc.inputs
        ),
        sources=tuple(sources),
        language="cwl",
    )
