"""Loading workflow specs' YAML within limits: file size and what aliases may repeat.

A YAML alias repeats its anchor's whole node: nine levels of nine aliases make a 1 KB file that
loads as 387 million values, which the spec model, the suite checks and the JSON serializers all
expand (``validate-spec`` ran for 43 s and died of ``MemoryError``). Every spec is read through
:func:`load` (``validate-spec``, DAG parsing, the step and validation tasks, crates, reruns all
call :func:`twinprov.provenance.spec.load_spec`), which refuses, before anything is built:

* a spec larger than :data:`MAX_SPEC_BYTES`;
* aliases that, expanded, would add more than :data:`MAX_ALIAS_EXPANSION` nodes to the document
  (anchors and aliases that repeat a few values, a shared set of kwargs say, stay allowed);
* an alias inside its own anchor (a recursive document).

The refusal is a :class:`~twinprov.provenance.errors.SpecError` naming the line of the anchor.
Suite files are JSON, which has no aliases.
"""

from __future__ import annotations

__all__ = ["MAX_ALIAS_EXPANSION", "MAX_SPEC_BYTES", "check_size", "load"]

from typing import Any

import yaml

from twinprov.provenance.errors import SpecError, SpecIssue

MAX_SPEC_BYTES = 1024 * 1024
"""The largest spec file twinprov reads (1 MiB); specs are a few KB."""

MAX_ALIAS_EXPANSION = 100_000
"""How many YAML nodes (values, keys, lists, mappings) aliases may add to a spec, in all."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CAP = 1 << 62  # expanded sizes are capped: a bomb's true size is a huge number


def check_size(size: int, source: str) -> None:
    """Refuse a spec of ``size`` bytes if it is larger than :data:`MAX_SPEC_BYTES`."""
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            source,
            [
                SpecIssue(
                    "",
                    f"the spec is {size} bytes, more than the limit of {MAX_SPEC_BYTES} bytes "
                    "(1 MiB): keep long texts and data in files the steps read",
                )
            ],
        )


def _utf8_size(text: str) -> int:
    if len(text) > MAX_SPEC_BYTES or len(text) * 4 <= MAX_SPEC_BYTES:
        return len(text)  # already too large, or too small to matter: no copy needed
    return len(text.encode("utf-8", "surrogatepass"))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _line(node: yaml.Node) -> str:
    mark = getattr(node, "start_mark", None)
    return f"line {mark.line + 1}" if mark is not None else ""


def check_aliases(root: yaml.Node, source: str) -> None:
    """Refuse a composed document whose aliases expand past :data:`MAX_ALIAS_EXPANSION` nodes,
    or that contains itself. Linear in the document's distinct nodes."""
    size: dict[int, int] = {}
    in_progress: set[int] = set()
    shared: dict[int, yaml.Node] = {}  # nodes reached more than once: the anchors used
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            in_progress.discard(key)
            size[key] = min(_CAP, 1 + sum(size[id(c)] for c in _children(node)))
            continue
        if key in size:
            shared[key] = node
            continue
        if key in in_progress:
            raise SpecError(
                source,
                [SpecIssue(_line(node), "a YAML alias inside its own anchor (a recursive value)")],
            )
        in_progress.add(key)
        distinct += 1
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    added = size[id(root)] - distinct
    if added > MAX_ALIAS_EXPANSION:
        biggest = max(shared.values(), key=lambda n: size[id(n)])
        big = size[id(biggest)]
        raise SpecError(
            source,
            [
                SpecIssue(
                    _line(biggest),
                    f"YAML aliases would expand the spec by more than {MAX_ALIAS_EXPANSION} "
                    f"values (the limit); the anchor here alone is "
                    f"{'over 10^18' if big >= _CAP else big} values: write the values out, "
                    "or use fewer levels of aliases",
                )
            ],
        )


def load(text: str, source: str = "<spec>") -> Any:
    """The YAML document in ``text`` (safe types only), within the limits above.

    Raises :class:`SpecError` past a limit, ``yaml.YAMLError`` for YAML that does not parse.
    """
    check_size(_utf8_size(text), source)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_aliases(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()
