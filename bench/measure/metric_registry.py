"""One definition per metric: its name, unit, how it is shown, which way is better, and the function
that computes it from raw request records (the formula is in that function's docstring).

Every number about requests comes from here: the cell summary's headline (bench/measure/metrics.py),
`compare`'s and `history`'s samples, the tables and exports, `bench.load` and the plots. A metric's
samples and its headline come from one function, so the two cannot disagree:

- a latency's samples are per-request values (ITL: per gap between tokens); its headline is their
  distribution (mean, stdev, p50/p90/p95/p99); a figure without a suffix is the p50;
- a rate's samples are pieces of the measured time, each with the amount done in it (tokens or
  requests) and its seconds; the headline is the ratio of their sums (per repetition: of that
  repetition's pieces); `compare` tests the per-piece rates;
- a fraction's samples are one 0 or 1 per request; its headline is their mean.

Records are grouped by (repetition, batch_index): the rows an in-process engine ran together in one
batch, or one served request (a served cell's records are one request each). A function receives the
records it should count; readers pass the measured ones (warm-up excluded, `Metric.samples`).
docs/metrics.md lists every metric with its formula.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench.errors import BenchError
from bench.measure.stats import distribution, percentile
from bench.results.records import RequestRecord

Kind = Literal["latency", "rate", "fraction"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateSample:
    """A piece of measured time: `amount` (tokens or requests) done in `seconds`."""

    repetition: int
    amount: float
    seconds: float

    @property
    def rate(self) -> float | None:
        return self.amount / self.seconds if self.seconds > 0 else None


# --- per request ---------------------------------------------------------------------------------


def ttft(record: RequestRecord) -> float | None:
    """Time to first token: first token - submit."""
    return None if record.first_token_time is None else record.first_token_time - record.submit_time


def e2e_latency(record: RequestRecord) -> float | None:
    """End-to-end latency: last token - submit."""
    return None if record.end_time is None else record.end_time - record.submit_time


def inter_token_latencies(record: RequestRecord) -> list[float]:
    """Inter-token latency, one value per token after the first chunk.

    Tokens that arrive one at a time give the gaps between consecutive tokens. A streamed chunk of k
    tokens arriving d seconds after the previous chunk gives each of its k tokens d / k (the per-token
    rate over that gap); the tokens that came with the first token have none (they are in its TTFT).
    So a request's values sum to its last chunk's arrival minus its first (and with one token in the
    first chunk their mean is its TPOT). A chunk's k is exact where the server returned token ids;
    where it did not, a chunk with text counts as one, and when the server's usage says more tokens
    came than were counted, the difference is spread evenly: each chunk after the first carries k * r
    tokens, r = (usage - first chunk's count) / (tokens counted after the first chunk)."""
    chunks, counts = record.chunk_times, record.chunk_tokens
    if chunks and counts and len(chunks) == len(counts):
        later = sum(counts[1:])
        scale = 1.0
        if not record.chunk_tokens_exact and later and record.output_tokens - counts[0] > later:
            scale = (record.output_tokens - counts[0]) / later
        return [(b - a) / (k * scale) for (a, b), k in zip(itertools.pairwise(chunks), counts[1:], strict=True)
                for _ in range(k)]
    return [b - a for a, b in itertools.pairwise(record.token_times)]


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first: (end - first token) / (output tokens - 1)."""
    if record.output_tokens < 2 or record.first_token_time is None or record.end_time is None:
        return None
    return (record.end_time - record.first_token_time) / (record.output_tokens - 1)


def span(records: Sequence[RequestRecord]) -> float:
    """Seconds from the first submit to the last end of a repetition (failed requests count)."""
    ends = [r.end_time for r in records if r.end_time is not None]
    if not ends:
        return 0.0
    return max(ends) - min(r.submit_time for r in records)


# Token times are stored rounded to 0.1 us (RequestRecord.to_json), first_token_time and end_time are
# not: a token within this of a moment came out at it (no decoding step takes a microsecond).
SAME_MOMENT_S = 1e-6


def tokens_after(record: RequestRecord, moment: float) -> int:
    """A record's tokens that came out after `moment`; without a time per token, all but the first."""
    if len(record.token_times) == record.output_tokens:
        return sum(1 for t in record.token_times if t > moment + SAME_MOMENT_S)
    return max(record.output_tokens - 1, 0)


# --- grouping and tiling -------------------------------------------------------------------------


def _by_repetition(records: Iterable[RequestRecord]) -> dict[int, list[RequestRecord]]:
    groups: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        groups[record.repetition].append(record)
    return dict(sorted(groups.items()))


def _batches(records: Iterable[RequestRecord]) -> list[list[RequestRecord]]:
    groups: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        groups[record.batch_index].append(record)
    return list(groups.values())


def _tile(repetition: int, start: float, events: Iterable[tuple[float | None, float]]) -> list[RateSample]:
    """Cut [start, last end] at each event's end: a piece ends where a group ends and holds the amount
    of every group ending there. Groups ending together share a piece; an amount with no end of its own
    joins the last piece, so the pieces' amounts add up to every group's."""
    pieces: list[RateSample] = []
    boundary, carried = start, 0.0
    for end, amount in sorted(events, key=lambda e: (e[0] is None, e[0] or 0.0)):
        carried += amount
        if end is not None and end > boundary:
            pieces.append(RateSample(repetition, carried, end - boundary))
            boundary, carried = end, 0.0
    if carried:
        if pieces:
            last = pieces.pop()
            pieces.append(RateSample(repetition, last.amount + carried, last.seconds))
        else:
            pieces.append(RateSample(repetition, carried, 0.0))
    return pieces


def _completion_pieces(records: Sequence[RequestRecord], amount: Callable[[RequestRecord], float]) -> list[RateSample]:
    """Each repetition's span, from its first submit to its last end, cut where a batch (served: a
    request) ends; a piece holds the amount of the successful requests that ended with it."""
    pieces: list[RateSample] = []
    for repetition, group in _by_repetition(records).items():
        events = []
        for batch in _batches(group):
            ends = [r.end_time for r in batch if r.end_time is not None]
            events.append((max(ends) if ends else None, float(sum(amount(r) for r in batch if r.ok))))
        pieces += _tile(repetition, min(r.submit_time for r in group), events)
    return pieces


# --- the metrics' formulas -----------------------------------------------------------------------


def ttft_samples(records: Sequence[RequestRecord]) -> list[float]:
    """ttft (s): first token - submit, per successful request."""
    return [v for r in records if r.ok and (v := ttft(r)) is not None]


def itl_samples(records: Sequence[RequestRecord]) -> list[float]:
    """itl (s): the gap between consecutive tokens, per gap of each successful request (for a batch,
    per decoding step)."""
    return [v for r in records if r.ok for v in inter_token_latencies(r)]


def tpot_samples(records: Sequence[RequestRecord]) -> list[float]:
    """tpot (s): (end - first token) / (output tokens - 1), per successful request with 2+ tokens."""
    return [v for r in records if r.ok and (v := tpot(r)) is not None]


def e2e_latency_samples(records: Sequence[RequestRecord]) -> list[float]:
    """e2e_latency (s): last token - submit, per successful request."""
    return [v for r in records if r.ok and (v := e2e_latency(r)) is not None]


def output_tok_s_samples(records: Sequence[RequestRecord]) -> list[RateSample]:
    """output_tok_s: output tokens of successful requests / the repetitions' spans (first submit to
    last end; failed requests take wall time too). Pieces: the span cut where a batch or a served
    request ends, each with the output tokens of the requests that ended then."""
    return _completion_pieces(records, lambda r: r.output_tokens)


def total_tok_s_samples(records: Sequence[RequestRecord]) -> list[RateSample]:
    """total_tok_s: (input + output tokens) of successful requests / the repetitions' spans; pieces
    as output_tok_s."""
    return _completion_pieces(records, lambda r: r.input_tokens + r.output_tokens)


def requests_per_s_samples(records: Sequence[RequestRecord]) -> list[RateSample]:
    """requests_per_s: successful requests / the repetitions' spans; pieces as output_tok_s."""
    return _completion_pieces(records, lambda r: 1)


def prefill_tok_s_samples(records: Sequence[RequestRecord]) -> list[RateSample]:
    """prefill_tok_s: per batch of successful rows, its prompt tokens over (its last first token - its
    first submit); the headline sums both over batches. A served request is a batch of one, so a
    served cell's figure is one stream's prompt rate (time to first token includes queueing)."""
    pieces = []
    for repetition, group in _by_repetition(r for r in records if r.ok).items():
        for batch in _batches(group):
            firsts = [r.first_token_time for r in batch if r.first_token_time is not None]
            if not firsts or not any(r.end_time is not None for r in batch):
                continue
            seconds = max(firsts) - min(r.submit_time for r in batch)
            pieces.append(RateSample(repetition, float(sum(r.input_tokens for r in batch)), seconds))
    return pieces


def decode_tok_s_samples(records: Sequence[RequestRecord]) -> list[RateSample]:
    """decode_tok_s, the system-wide decode rate: tokens decoded per second in which something was
    decoding, all rows and streams together.

    A batch's decode window runs from its last row's first token to its last end, and only tokens
    after the window opened count (so rows that vLLM decodes while others are still in prefill cannot
    inflate it; in a static batch that is every token after the first). A served request's window is
    its own first token to its end. Windows that overlap in time (concurrent served streams) are
    counted once: the seconds are the length of their union, cut where a window closes; a piece holds
    the tokens of the windows that closed with it. Sequential batches give one piece per batch."""
    pieces: list[RateSample] = []
    for repetition, group in _by_repetition(r for r in records if r.ok).items():
        windows = []
        for batch in _batches(group):
            firsts = [r.first_token_time for r in batch if r.first_token_time is not None]
            ends = [r.end_time for r in batch if r.end_time is not None]
            if firsts and ends:
                opens = max(firsts)
                windows.append((opens, max(ends), float(sum(tokens_after(r, opens) for r in batch))))
        windows.sort()
        overlapping: list[tuple[float, float, float]] = []  # windows that overlap, up to `closes`
        closes = 0.0
        for window in windows:
            if overlapping and window[0] > closes:
                pieces += _tile(repetition, overlapping[0][0], [(w[1], w[2]) for w in overlapping])
                overlapping = []
            closes = max(closes, window[1]) if overlapping else window[1]
            overlapping.append(window)
        if overlapping:
            pieces += _tile(repetition, overlapping[0][0], [(w[1], w[2]) for w in overlapping])
    return pieces


def stream_decode_tok_s_samples(records: Sequence[RequestRecord]) -> list[RateSample]:
    """stream_decode_tok_s, one stream's decode rate: per successful request, its tokens after its
    first over (end - first token); the headline sums both over requests (about 1 / tpot). In a batch
    of N rows it is about decode_tok_s / N; a served cell stored it as decode_tok_s before schema v3."""
    pieces = []
    for r in records:
        if r.ok and r.first_token_time is not None and r.end_time is not None:
            pieces.append(RateSample(r.repetition, float(tokens_after(r, r.first_token_time)),
                                     r.end_time - r.first_token_time))
    return pieces


def error_rate_samples(records: Sequence[RequestRecord]) -> list[float]:
    """error_rate: failed requests / all measured requests; a sample is 1.0 per failed request, 0.0
    per successful one."""
    return [0.0 if r.ok else 1.0 for r in records]


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    unit: str
    display_unit: str
    scale: float  # shown value = value x scale (seconds shown as milliseconds)
    higher_is_better: bool
    compute: Callable[[Sequence[RequestRecord]], list[Any]]

    @property
    def formula(self) -> str:
        return " ".join((self.compute.__doc__ or "").split())

    def samples(self, records: Iterable[RequestRecord]) -> list[Any]:
        """This metric's samples from a cell's records, warm-up excluded."""
        return self.compute([r for r in records if not r.warmup])

    def figure(self, samples: Sequence[Any], stat: str | None = None) -> float | None:
        """The figure its samples give: a latency's percentile (p50 by default) or mean, a rate's ratio
        of sums, a fraction's mean. The headline stores the same figures."""
        if not samples:
            return None
        if self.kind == "rate":
            seconds = sum(s.seconds for s in samples)
            return sum(s.amount for s in samples) / seconds if seconds > 0 else None
        if self.kind == "fraction" or stat == "mean":
            return sum(samples) / len(samples)
        return percentile(sorted(samples), float(stat[1:]) if stat else 50.0)

    def test_values(self, samples: Sequence[Any]) -> list[float]:
        """What a significance test compares: the values themselves, or each piece's rate."""
        if self.kind == "rate":
            return [rate for s in samples if (rate := s.rate) is not None]
        return list(samples)

    def headline(self, samples: Sequence[Any], repetitions: Sequence[int]) -> dict[str, Any]:
        """The entry the cell summary stores under this metric's name."""
        if self.kind == "latency":
            return distribution(samples, self.unit)
        if self.kind == "fraction":
            return {"unit": self.unit, "value": self.figure(samples)}
        return {"unit": self.unit, "value": self.figure(samples),
                "per_repetition": [self.figure([s for s in samples if s.repetition == k]) for k in repetitions]}

    def stored(self, entry: dict[str, Any] | None, stat: str | None = None) -> float | None:
        """The figure as a stored headline entry holds it."""
        entry = entry or {}
        if self.kind == "latency":
            return entry.get(stat) if stat else entry.get("value", entry.get("p50"))
        return entry.get("value")

    def shown(self, value: float | None) -> float | None:
        return None if value is None else value * self.scale


def _latency(name: str, compute: Callable[[Sequence[RequestRecord]], list[Any]]) -> Metric:
    return Metric(name, "latency", "s", "ms", 1000.0, False, compute)


def _rate(name: str, unit: str, compute: Callable[[Sequence[RequestRecord]], list[Any]]) -> Metric:
    return Metric(name, "rate", unit, unit, 1.0, True, compute)


METRICS: dict[str, Metric] = {m.name: m for m in (
    _latency("ttft", ttft_samples),
    _latency("itl", itl_samples),
    _latency("tpot", tpot_samples),
    _latency("e2e_latency", e2e_latency_samples),
    _rate("output_tok_s", "tok/s", output_tok_s_samples),
    _rate("total_tok_s", "tok/s", total_tok_s_samples),
    _rate("requests_per_s", "req/s", requests_per_s_samples),
    _rate("prefill_tok_s", "tok/s", prefill_tok_s_samples),
    _rate("decode_tok_s", "tok/s", decode_tok_s_samples),
    _rate("stream_decode_tok_s", "tok/s", stream_decode_tok_s_samples),
    Metric("error_rate", "fraction", "fraction", "fraction", 1.0, False, error_rate_samples),
)}

# Names whose meaning changed for served cells in schema v3 -> what a served cell stored under it before.
SERVED_MEANING_CHANGED = {"decode_tok_s": "stream_decode_tok_s"}

_STAT = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:_(?P<stat>p50|p90|p95|p99|mean))?$")
_noted: set[str] = set()


def split_metric(name: str) -> tuple[str, str | None]:
    """`ttft_p99` -> (ttft, p99); `decode_tok_s` -> (decode_tok_s, None); BenchError for unknown names."""
    match = _STAT.match(name)
    base, stat = (match["base"], match["stat"]) if match else (name, None)
    if base not in METRICS:
        raise BenchError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))} "
                         "(latencies take _p50/_p90/_p95/_p99/_mean)")
    if stat and METRICS[base].kind != "latency":
        raise BenchError(f"{name!r}: only latencies take a percentile suffix")
    return base, stat


def metric(name: str) -> Metric:
    """The registry's metric of a name as users write it (`ttft_p99` -> ttft)."""
    return METRICS[split_metric(name)[0]]


def note_served_meaning(name: str) -> None:
    """Say once per process (stderr) that a name asked of served cells changed meaning in schema v3."""
    base = split_metric(name)[0]
    if base in SERVED_MEANING_CHANGED and base not in _noted:
        _noted.add(base)
        log.warning("note: %s of served cells is the system-wide rate (all streams together) since result-set "
                    "schema v3; one stream's rate, which served cells stored as %s before, is %s (docs/metrics.md)",
                    base, base, SERVED_MEANING_CHANGED[base])
