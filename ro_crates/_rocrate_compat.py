"""Every rocrate (ro-crate-py) internal the crate writer relies on, in one place.

ro-crate-py has no public API for what these do as cheaply, so they are done here;
``tests/ro_crates/test_rocrate_compat.py`` pins them, so a rocrate upgrade that removes or changes
one fails that test by name instead of silently changing (or slowing down) the crates.

* ``Entity.properties()`` returns the entity's live JSON-LD dictionary (``_jsonld``): property
  values that are already JSON-LD go straight into it (:func:`add_entity`,
  :func:`add_placed_file`) instead of through rocrate's per-key conversion.
* ``File.write(base_path)`` is what ``ROCrate.write`` calls for each data entity:
  :class:`PlacedFile` makes it a no-op, the planner has already put the bytes in place.
* ``Metadata.stream()`` yields ``(id, bytes)`` that ``Metadata.write`` writes, from
  ``Metadata.generate()``: :class:`FastMetadata` serializes large graphs one entity per line.
  ``Metadata.extra_contexts`` adds the ``workflow-run`` context. ``ROCrate.add`` of a
  ``Metadata`` replaces ``crate.metadata`` (the entity keeps its place in the graph).
* ``Preview.generate_html()`` renders ``rocrate/templates/preview_template.html.j2`` with the
  template globals ``stringify`` and ``is_object_list`` from ``crate.contextual_entities`` and
  ``crate.data_entities`` (``_jsonld`` of each): :class:`CachedPreview` does the same with the
  template compiled once (:func:`preview_template`, with HTML autoescaping, which rocrate's
  lacks); the crate's preview entity gets that class at run time (``crate.preview.__class__``).
* ``ROCrate.resolve_id`` resolves every identifier against ``ROCrate.arcp_base_uri`` with
  ``urljoin``: :class:`FastCrate` concatenates instead when that gives the same answer.
"""

from __future__ import annotations

__all__ = [
    "PINNED",
    "PREVIEW_TEMPLATE",
    "PRETTY_MAX_ENTITIES",
    "CachedPreview",
    "FastCrate",
    "FastMetadata",
    "PlacedFile",
    "add_entity",
    "add_placed_file",
    "new_crate",
    "preview_template",
]

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rocrate.model.contextentity import ContextEntity
from rocrate.model.entity import Entity
from rocrate.model.file import File
from rocrate.model.metadata import Metadata
from rocrate.model.preview import Preview
from rocrate.rocrate import ROCrate

PINNED: dict[str, tuple[str, ...]] = {
    "rocrate.model.entity.Entity": ("properties",),
    "rocrate.model.file.File": ("write",),
    "rocrate.model.metadata.Metadata": ("generate", "stream", "write"),
    "rocrate.model.preview.Preview": ("generate_html",),
    "rocrate.rocrate.ROCrate": (
        "add",
        "contextual_entities",
        "data_entities",
        "resolve_id",
        "write",
    ),
}
"""The rocrate methods overridden or relied on here, by the class that holds them (checked by
the tests; the instance attributes ``_jsonld``, ``extra_contexts`` and ``arcp_base_uri`` too)."""

PREVIEW_TEMPLATE = ("templates", "preview_template.html.j2")
"""rocrate's preview template, relative to the ``rocrate`` package folder."""


# Property values are already JSON-LD (references are ``{"@id": …}``), so they go straight
# into the entity's dictionary rather than through rocrate's per-key conversion.


def add_entity(
    crate: ROCrate, ident: str, types: str | list[str], props: Mapping[str, Any]
) -> Entity:
    """Add a contextual entity; ``None``, ``[]`` and ``""`` values are left out."""
    entity = ContextEntity(crate, ident)
    jsonld = entity.properties()
    jsonld["@type"] = types
    jsonld.update((k, v) for k, v in props.items() if v is not None and v != [] and v != "")
    return crate.add(entity)


def add_placed_file(
    crate: ROCrate, source: Path | str, dest: str | None, props: Mapping[str, Any]
) -> Entity:
    """Add a data entity: ``source`` already copied to ``dest`` in the crate, or a URI."""
    entity = PlacedFile(crate, source=source, dest_path=dest)
    jsonld = entity.properties()
    for k, v in props.items():
        if v is not None and v != [] and v != "":
            jsonld[k] = v
    return crate.add(entity)


def new_crate(*extra_contexts: str) -> ROCrate:
    """An empty RO-Crate 1.1 with the fast resolver, serializer and preview."""
    crate = FastCrate(version="1.1", gen_preview=True)
    crate.preview.__class__ = CachedPreview  # same entity, same place in the graph
    metadata = FastMetadata(crate, properties={"about": crate.root_dataset}, version="1.1")
    crate.add(metadata)
    crate.metadata.extra_contexts.extend(extra_contexts)
    return crate


class PlacedFile(File):  # type: ignore[misc]
    """A data entity whose bytes the builder already put in the crate folder (no copy)."""

    def write(self, base_path: Any) -> None:
        return None


PRETTY_MAX_ENTITIES = 5000
"""Larger graphs are written one entity per line (the indenting JSON encoder is pure Python)."""


class FastMetadata(Metadata):  # type: ignore[misc]
    """``ro-crate-metadata.json`` as rocrate generates it, serialized fast when it is large."""

    def stream(self, chunk_size: int = 8192) -> Any:
        content = self.generate()
        graph = content["@graph"]
        if len(graph) <= PRETTY_MAX_ENTITIES:
            text = json.dumps(content, indent=4, sort_keys=True, ensure_ascii=False)
        else:
            context = json.dumps(content["@context"], ensure_ascii=False)
            entities = ",\n".join(json.dumps(e, sort_keys=True, ensure_ascii=False) for e in graph)
            text = f'{{"@context": {context},\n"@graph": [\n{entities}\n]}}\n'
        yield self.id, text.encode("utf-8")


@functools.cache
def preview_template() -> Any:
    """rocrate's preview template, compiled once per process (rocrate compiles it for every
    crate it writes: a few ms of Jinja each time). Compiled in the scheduler, before the
    executor forks, by the listener's preload.

    Unlike rocrate's, with HTML autoescaping: what it shows (the crate's name and description,
    which carry the workflow's version and the run id; data entity ids; names) comes from specs
    and runs, and is text, never markup."""
    import rocrate.model.preview as rocrate_preview
    from jinja2 import Environment

    path = Path(rocrate_preview.__file__).parent.parent.joinpath(*PREVIEW_TEMPLATE)
    template = Environment(autoescape=True).from_string(path.read_text(encoding="utf-8"))

    def stringify(a: Any) -> Any:  # rocrate's own template functions, as it defines them
        if type(a) is list:
            return ", ".join(a)
        elif type(a) is str:
            return a
        else:
            if a._jsonld and a._jsonld["name"]:
                return a._jsonld["name"]
            else:
                return str(a)

    def is_object_list(a: Any) -> bool:
        if type(a) is list:
            for obj in a:
                if obj is not str:
                    return True
        return False

    template.globals["stringify"] = stringify
    template.globals["is_object_list"] = is_object_list
    return template


class CachedPreview(Preview):  # type: ignore[misc]
    """``ro-crate-preview.html`` as rocrate renders it, from the template compiled once."""

    def generate_html(self) -> str:
        context = [e._jsonld for e in self.crate.contextual_entities]
        data = [e._jsonld for e in self.crate.data_entities]
        return str(preview_template().render(crate=self.crate, context=context, data=data))


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_~%!$&'()*+,=@.-]+(?:/[A-Za-z0-9_~%!$&'()*+,=@.-]+)*/?")
_DOT_SEGMENT = re.compile(r"/\.\.?/")


class FastCrate(ROCrate):  # type: ignore[misc]
    """rocrate's ``ROCrate``, resolving simple identifiers without ``urljoin``.

    Every add and lookup resolves the identifier against the crate's ``arcp://`` base; for a
    fragment, or a relative path of plain segments (no ``.``/``..``, no ``?``/``;``/``:``),
    that is concatenation, and ``urljoin`` dominated the build of large crates.
    """

    def resolve_id(self, id_: str) -> str:
        if id_.startswith("#") or (
            _PLAIN_PATH.fullmatch(id_) and not _DOT_SEGMENT.search(f"/{id_}/")
        ):
            return str(self.arcp_base_uri + id_).rstrip("/")
        return str(super().resolve_id(id_))
