"""The /metrics body from cached bytes: job metrics rendered once per snapshot, the rest live.

prometheus_client renders every sample of the registry on every scrape, although the
job metrics change once a sweep; at 1,000 jobs that rendering was nine tenths of a
scrape's CPU. Here a scrape renders only what changes between scrapes:

- A collector with ``parts()`` (:class:`~ft_exporter.collector.FineTuneCollector`,
  :class:`~ft_exporter.selfmetrics.SelfMetrics`) hands over its families account by
  account as :class:`~ft_exporter.collector.Part` objects, each the same object
  until what it was built from changes (a snapshot, a request counted). Each part is
  rendered once per format to sample lines, by prometheus_client itself (the part's
  family rendered alone, its header cut off), and cached under the part. The block
  for the whole collector (per family name, in the collector's order: one header,
  then every part's lines) is cached under the tuple of parts, so a scrape whose
  accounts are all unchanged and fresh reuses it whole; which parts a scrape gets
  (staleness) is still decided by the collector at scrape time.
- Every other collector (process, platform, GC, the HTTP server's gauges, the
  reloader's) is collected on every scrape, and each family rendered by
  prometheus_client unless it equals its previous collection.

The bytes are those ``generate_latest(registry)`` gives at the same moment, for the
text format and OpenMetrics (tests compare them).

gzip: a body is sent as one gzip member (RFC 1952) whose deflate data is its segments
compressed independently, each ended with a sync flush (byte-aligned, not final),
then an empty final block; the CRC-32 and length cover the whole body. A deflate
stream may be cut into blocks anywhere, and a segment compressed from scratch never
refers back past its start, so the joined stream is valid deflate (pigz joins its
parallel chunks the same way). The cached block's compressed form is therefore
cached too, and a scrape compresses only its live segments; a large cached
segment's CRC-32 is combined, not recomputed. One member rather than several
concatenated members (which RFC 1952 allows, and Prometheus reads), because some
clients stop after the first member: curl 7.88 ``--compressed`` does.

Rendering runs where Routes runs: on the HTTP server's worker threads, never on its
event loop. A first render after a new snapshot costs what rendering on the spot
did for the parts that changed; every later scrape reuses them.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.registry import Collector

from ft_exporter.collector import Part

#: The compression level of every segment (the level the whole body had before).
GZIP_LEVEL = 5
#: Most live families remembered (the exporter has a few dozen).
MAX_MEMO = 4096
#: A gzip member header: deflate, no flags, no mtime, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: An empty final deflate block (fixed Huffman, end-of-block only): ends the stream.
_FINAL_BLOCK = b"\x03\x00"


@dataclass(frozen=True, eq=False)
class Format:
    """An exposition format: prometheus_client's encoder and what ends a body."""

    name: str
    encode: Callable[[Collector], bytes]
    #: Written once after every family (OpenMetrics' ``# EOF``).
    trailer: bytes = b""

    def render(self, collector: Collector) -> bytes:
        """The families of ``collector`` without the trailer."""
        body = self.encode(collector)
        if self.trailer:
            if not body.endswith(self.trailer):
                raise ValueError(f"{self.name}: the encoder did not end with {self.trailer!r}")
            body = body[: -len(self.trailer)]
        return body


_om_encode: Callable[[Collector], bytes] = om.generate_latest
TEXT = Format("text 0.0.4", generate_latest)
OPENMETRICS = Format("OpenMetrics 1.0.0", _om_encode, b"# EOF\n")


@runtime_checkable
class PartedCollector(Protocol):
    """A collector that hands over its families unmerged, in parts cached by identity."""

    #: Its family names in the order it yields them.
    order: tuple[str, ...]

    def parts(self) -> Sequence[Part]: ...

    def collect(self) -> Iterable[Metric]: ...


class ExporterRegistry(CollectorRegistry):
    """A registry that tells its collectors, in the order it collects them.

    prometheus_client has no public way to list a registry's collectors; the
    exposition needs them to render some from cache and the rest live, in order.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self._order_lock = threading.Lock()
        self._ordered: tuple[Collector, ...] = ()

    def register(self, collector: Collector) -> None:
        super().register(collector)  # raises on a duplicate name: then nothing changes
        with self._order_lock:
            self._ordered = (*self._ordered, collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        with self._order_lock:
            self._ordered = tuple(c for c in self._ordered if c is not collector)

    def collectors(self) -> tuple[Collector, ...]:
        return self._ordered


class _Families(Collector):
    """Fixed families as a collector."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


#: Samples the text encoder moves out of their family into one of its own, after it:
#: such families cannot be merged across parts by joining lines.
_MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")


class _NotLines(Exception):
    """A family that does not render as its header and one run of sample lines."""


def _gf2_times(matrix: Sequence[int], vector: int) -> int:
    """A 32x32 matrix over GF(2) (a list of columns) times a 32-bit vector."""
    total = 0
    column = 0
    while vector:
        if vector & 1:
            total ^= matrix[column]
        vector >>= 1
        column += 1
    return total


def _zero_operators() -> list[list[int]]:
    """Per k: the operator feeding 2**k zero bytes through a CRC-32 (zlib's crc32_combine)."""
    operator = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):  # two, four, eight bits: one byte
        operator = [_gf2_times(operator, column) for column in operator]
    operators = [operator]
    for _ in range(40):
        operator = [_gf2_times(operator, column) for column in operator]
        operators.append(operator)
    return operators


_ZERO_OPERATORS: list[list[int]] = []


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from those of A and B (B ``length2`` bytes long), as zlib's
    crc32_combine, which Python does not expose: a few hundred steps for any length."""
    if not _ZERO_OPERATORS:
        _ZERO_OPERATORS.extend(_zero_operators())
    k = 0
    while length2:
        if length2 & 1:
            crc1 = _gf2_times(_ZERO_OPERATORS[k], crc1)
        length2 >>= 1
        k += 1
    return crc1 ^ crc2


#: A segment at least this long is CRC-ed once and combined, instead of once per scrape.
COMBINE_BYTES = 256 * 1024


class Segment:
    """Part of a body; its deflate form and CRC-32 once asked for (kept with it)."""

    __slots__ = ("_crc", "_deflated", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._deflated: bytes | None = None
        self._crc: int | None = None

    def deflated(self) -> bytes:
        """Its deflate blocks, sync-flushed: byte-aligned, not final, joinable."""
        if self._deflated is None:
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            self._deflated = compressor.compress(self.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return self._deflated

    def crc32(self, before: int) -> int:
        """The CRC-32 of what came before and this segment."""
        if len(self.data) < COMBINE_BYTES:
            return zlib.crc32(self.data, before)
        if self._crc is None:
            self._crc = zlib.crc32(self.data)
        return crc32_combine(before, self._crc, len(self.data))


@dataclass(frozen=True)
class Body:
    """One scrape's body, as segments (cached ones shared between scrapes)."""

    segments: tuple[Segment, ...]

    def __len__(self) -> int:
        return sum(len(segment.data) for segment in self.segments)

    def joined(self) -> bytes:
        return b"".join(segment.data for segment in self.segments)

    def gzip(self) -> bytes:
        """One gzip member: the segments' deflate forms joined, then a final block."""
        crc = 0
        size = 0
        deflated = [_GZIP_HEADER]
        for segment in self.segments:
            crc = segment.crc32(crc)
            size += len(segment.data)
            deflated.append(segment.deflated())
        deflated.append(_FINAL_BLOCK)
        deflated.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
        return b"".join(deflated)


@dataclass(frozen=True)
class _Block:
    parts: tuple[Part, ...]
    segment: Segment


class Exposition:
    """Renders a registry's body per format, reusing what has not changed since."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        #: Per (collector, format): the block of the latest scrape.
        self._blocks: dict[tuple[int, Format], _Block] = {}
        #: Per (collector, format): each part's sample lines by family name.
        self._lines: dict[tuple[int, Format], dict[Part, dict[str, bytes]]] = {}
        self._headers: dict[tuple[Format, str, str, str, str], bytes] = {}
        #: Per (format, family name): a live family as last collected, and its bytes.
        self._memo: dict[tuple[Format, str], tuple[Metric, bytes]] = {}
        self._planned: tuple[tuple[Collector, ...], list[PartedCollector | list[Collector]]] | None
        self._planned = None

    def _plan(self) -> list[PartedCollector | list[Collector]]:
        """The collectors in order, runs of live ones grouped; kept until they change."""
        if isinstance(self._registry, ExporterRegistry):
            collectors = self._registry.collectors()
        else:
            collectors = (self._registry,)  # any other registry: rendered whole, live
        planned = self._planned
        if planned is not None and planned[0] == collectors:  # compared by identity
            return planned[1]
        plan: list[PartedCollector | list[Collector]] = []
        for collector in collectors:
            if isinstance(collector, PartedCollector):
                plan.append(collector)
            elif plan and isinstance(plan[-1], list):
                plan[-1].append(collector)
            else:
                plan.append([collector])
        self._planned = (collectors, plan)
        return plan

    def render(self, fmt: Format) -> Body:
        segments: list[Segment] = []
        live = False
        for step in self._plan():
            live = isinstance(step, list)
            if isinstance(step, list):
                segments.append(Segment(self._live(step, fmt)))
            else:
                segments.append(self._block(step, fmt))
        if fmt.trailer:
            if live:
                segments[-1] = Segment(segments[-1].data + fmt.trailer)
            else:
                segments.append(Segment(fmt.trailer))
        return Body(tuple(segments))

    def _live(self, collectors: Sequence[Collector], fmt: Format) -> bytes:
        """Collected now; a family equal to its previous collection reuses its bytes.

        Only a new object is compared: a collector that yields the same Metric again
        may have changed it in place.
        """
        out: list[bytes] = []
        memo = self._memo
        if len(memo) > MAX_MEMO:
            memo.clear()  # family names that come and go: not the exporter's own
        for collector in collectors:
            for family in collector.collect():
                key = (fmt, family.name)
                previous = memo.get(key)
                if previous is not None and previous[0] is not family and previous[0] == family:
                    out.append(previous[1])
                    continue
                rendered = fmt.render(_Families([family]))
                memo[key] = (family, rendered)
                out.append(rendered)
        return b"".join(out)

    def _block(self, collector: PartedCollector, fmt: Format) -> Segment:
        parts = tuple(collector.parts())
        key = (id(collector), fmt)
        with self._lock:
            block = self._blocks.get(key)
            if block is not None and block.parts == parts:  # Part compares by identity
                return block.segment
            lines = self._lines.get(key, {})
            try:
                kept = {part: lines.get(part) or self._part_lines(part, fmt) for part in parts}
            except _NotLines:  # *_created series (not disabled): render it whole, live
                return Segment(fmt.render(collector))
            self._lines[key] = kept  # parts no longer served (replaced, removed) go
            out: list[bytes] = []
            for name in collector.order:
                first: Metric | None = None
                chunks: list[bytes] = []
                for part in parts:
                    for family in part.families:
                        if family.name == name:
                            first = family if first is None else first
                            chunks.append(kept[part][name])
                if first is not None:
                    out.append(self._header(first, fmt))
                    out.extend(chunks)
            segment = Segment(b"".join(out))
            self._blocks[key] = _Block(parts, segment)
            return segment

    def _part_lines(self, part: Part, fmt: Format) -> dict[str, bytes]:
        lines: dict[str, bytes] = {}
        for family in part.families:
            moved = tuple(family.name + suffix for suffix in _MOVED_SUFFIXES)
            if any(sample.name in moved for sample in family.samples):
                raise _NotLines(family.name)
            header = self._header(family, fmt)
            rendered = fmt.render(_Families([family]))
            if not rendered.startswith(header):
                raise ValueError(f"{family.name}: rendered without its header")
            lines[family.name] = lines.get(family.name, b"") + rendered[len(header) :]
        return lines

    def _header(self, family: Metric, fmt: Format) -> bytes:
        """What the encoder writes for the family before its samples (HELP, TYPE, UNIT)."""
        key = (fmt, family.name, family.documentation, family.type, family.unit)
        header = self._headers.get(key)
        if header is None:
            empty = Metric(family.name, family.documentation, family.type, family.unit)
            header = self._headers[key] = fmt.render(_Families([empty]))
        return header
