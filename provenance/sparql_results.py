"""Writing a SPARQL answer within a row cap and a time limit, saying where it was cut.

Results are streamed through pyoxigraph's TSV (solutions) or N-Triples (graphs) serializer, where
one line is one row, counted as they come; the stream stops at the row cap or at the time limit,
the rows kept are parsed back by pyoxigraph and written in the chosen format by pyoxigraph's own
serializer. Nothing is formatted by hand. Which format is chosen (HTTP content negotiation) is the
caller's business: it passes a function from the kind of answer to an :class:`OutputFormat`.

The time limit is enforced twice: here between output chunks (the answer is cut, with the rows
found so far), and by the caller, which runs queries in a separate process and stops it when a
query produces nothing in time (pyoxigraph cannot interrupt a running evaluation in-process).
"""

from __future__ import annotations

__all__ = [
    "AnswerTooLargeError",
    "ChooseFormat",
    "Cut",
    "OutputFormat",
    "Rendered",
    "TimeLimitError",
    "render",
    "render_lines",
]

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol, cast

import pyoxigraph as ox

from twinprov.provenance.errors import QueryError
from twinprov.provenance.sparql_check import Kind

Cut = Literal["row-cap", "time-limit", "answer-size"]


class OutputFormat(Protocol):
    """A serialization to answer in, as chosen by the caller."""

    @property
    def media_type(self) -> str:
        """The media type of the answer (copied into :attr:`Rendered.media_type`)."""
        ...

    @property
    def ox_format(self) -> Any:
        """The ``pyoxigraph.QueryResultsFormat`` (results) or ``pyoxigraph.RdfFormat`` (graph)."""
        ...


ChooseFormat = Callable[[Kind], OutputFormat]
"""The caller's choice of format for an answer of a kind; raises when none fits."""


class TimeLimitError(QueryError):
    """The query produced nothing within the time limit and was stopped."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"the query was stopped at the time limit of {seconds:g} s before it produced "
            "any result; narrow it (a more selective pattern, a LIMIT) and retry"
        )


class AnswerTooLargeError(QueryError):
    """One row of the answer is larger than the answer size limit, or the answer needed more
    memory than the query process may use (HTTP 413)."""


@dataclass(frozen=True)
class Rendered:
    """A serialized answer and where it was cut."""

    body: bytes
    media_type: str
    form: str
    rows: int | None = None
    """Solutions or triples in the answer (None for ASK)."""
    cut: Cut | None = None
    """Why the answer is incomplete: ``row-cap`` or ``time-limit`` (None: complete)."""
    extra: dict[str, str] = field(default_factory=dict)


class _Stop(Exception):
    pass


class _LineCounter:
    """A binary sink that keeps at most ``cap`` lines after ``header`` lines and at most
    ``max_bytes`` bytes, and stops the serializer that writes into it (by raising) when there are
    more, or when time is up."""

    def __init__(
        self, cap: int, deadline: float | None, header: int, max_bytes: int | None = None
    ) -> None:
        self.buf = bytearray()
        self.lines = 0
        self.limit = cap + header
        self.header = header
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.cut: Cut | None = None

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; False when the stream should stop."""
        self.buf += chunk
        self.lines += chunk.count(b"\n")
        if self.lines > self.limit:
            self.cut = "row-cap"
            return False
        if self.max_bytes is not None and len(self.buf) > self.max_bytes:
            self.cut = "answer-size"
            return False
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.cut = "time-limit"
            return False
        return True

    def write(self, chunk: bytes) -> int:
        if not self.feed(bytes(chunk)):
            raise _Stop
        return len(chunk)

    def flush(self) -> None:
        pass

    def kept(self) -> bytes:
        """The complete lines kept (all of them if the stream was not cut).

        Raises:
            AnswerTooLargeError: cut at ``max_bytes`` before the first row was complete.
        """
        data = bytes(self.buf)
        if self.cut is None:
            return data if not data or data.endswith(b"\n") else data + b"\n"
        lines = data.split(b"\n")[:-1]  # the last piece is empty or a partly written line
        if self.cut != "answer-size":
            return b"".join(line + b"\n" for line in lines[: self.limit])
        assert self.max_bytes is not None
        kept, size = [], 0
        for line in lines[: self.limit]:
            size += len(line) + 1
            if size > self.max_bytes:
                break
            kept.append(line + b"\n")
        if len(kept) <= self.header:
            raise AnswerTooLargeError(
                f"one row of the answer is larger than the answer size limit of "
                f"{self.max_bytes / 2**20:g} MiB; select less (e.g. SUBSTR of long values)"
            )
        return b"".join(kept)


def _too_large(e: MemoryError) -> AnswerTooLargeError:
    return AnswerTooLargeError(f"the answer is too large to write ({e}); select less")


def _finish_solutions(tsv: bytes, fmt: OutputFormat, cut: Cut | None) -> Rendered:
    try:
        solutions = ox.parse_query_results(tsv, format=ox.QueryResultsFormat.TSV)
        rows = max(tsv.count(b"\n") - 1, 0)
        body = solutions.serialize(format=fmt.ox_format) or b""
    except MemoryError as e:  # pyoxigraph's parser takes lines of up to 16 MiB
        raise _too_large(e) from e
    return Rendered(body, fmt.media_type, "SELECT", rows, cut)


def _finish_triples(nt: bytes, fmt: OutputFormat, cut: Cut | None, form: str) -> Rendered:
    try:
        triples = [q.triple for q in ox.parse(nt, format=ox.RdfFormat.N_TRIPLES)]
        body = bytes(ox.serialize(triples, format=fmt.ox_format) or b"")
    except MemoryError as e:
        raise _too_large(e) from e
    return Rendered(body, fmt.media_type, form, len(triples), cut)


def render(
    result: Any,
    *,
    choose: ChooseFormat,
    row_cap: int,
    deadline: float | None,
    form: str | None = None,
    max_bytes: int | None = None,
) -> Rendered:
    """Serialize a pyoxigraph query result in the format ``choose`` gives for its kind, within
    ``row_cap`` rows, ``max_bytes`` bytes (of the TSV / N-Triples stream) and the ``deadline``
    (a :func:`time.monotonic` value, or None).

    Raises:
        AnswerTooLargeError: one row is larger than ``max_bytes``.
        whatever ``choose`` raises when no format fits the result.
    """
    if isinstance(result, ox.QueryBoolean):
        f = choose("results")
        return Rendered(result.serialize(format=f.ox_format) or b"", f.media_type, "ASK")
    if isinstance(result, ox.QuerySolutions):
        f = choose("results")
        sink = _LineCounter(row_cap, deadline, header=1, max_bytes=max_bytes)
        with contextlib.suppress(_Stop):  # the sink stops the serializer at a limit
            result.serialize(cast(IO[bytes], sink), format=ox.QueryResultsFormat.TSV)
        return _finish_solutions(sink.kept(), f, sink.cut)
    f = choose("graph")
    sink = _LineCounter(row_cap, deadline, header=0, max_bytes=max_bytes)
    with contextlib.suppress(_Stop):
        result.serialize(sink, format=ox.RdfFormat.N_TRIPLES)
    return _finish_triples(sink.kept(), f, sink.cut, form or "CONSTRUCT")


def render_lines(
    chunks: Iterable[bytes],
    *,
    kind: Kind,
    form: str,
    choose: ChooseFormat,
    row_cap: int,
    deadline: float | None,
    on_stop: Callable[[], None] | None = None,
    max_bytes: int | None = None,
) -> Rendered:
    """Like :func:`render`, for rows that arrive as bytes from another SPARQL server: SELECT
    results as TSV (``kind='results'``) or CONSTRUCT/DESCRIBE triples as N-Triples (``'graph'``).
    ``on_stop`` is called when the stream is cut, to close it."""
    f = choose(kind)
    sink = _LineCounter(
        row_cap, deadline, header=1 if kind == "results" else 0, max_bytes=max_bytes
    )
    for chunk in chunks:
        if not sink.feed(chunk):
            if on_stop is not None:
                on_stop()
            break
    if kind == "results":
        return _finish_solutions(sink.kept(), f, sink.cut)
    return _finish_triples(sink.kept(), f, sink.cut, form)
