"""The raw per-request record: the data every metric is derived from.

Times are seconds on the cell's monotonic clock (`time.perf_counter`), relative to the start of the
cell; wall-clock anchors live in the cell summary. Requests in one batch share step times.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any


@dataclass
class RequestRecord:
    request_id: int
    repetition: int  # -1 for warm-up requests, which no metric uses
    batch_index: int
    batch_size: int
    input_tokens: int
    expected_output_tokens: int
    submit_time: float
    first_token_time: float | None = None
    end_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    finish_reason: str | None = None  # "length" when the requested number of tokens came out
    error: str | None = None
    context_depth: int = 0  # tokens already in the KV cache before this request (prefill-decode)
    prompt_sha256: str | None = None
    # Served requests: when it actually went out (submit_time is when it was scheduled, so latency
    # counts any lag of the load generator), the server's own token count, and which endpoint.
    sent_time: float | None = None
    usage_output_tokens: int | None = None
    endpoint: str | None = None
    load_point: float | None = None  # capacity cells: the rate (req/s) or users this request was sent under
    # In-process vLLM: the engine's own timestamps (queued, scheduled, first_token, last_token; same
    # clock and origin as the times above), its wall-clock first-token latency, cached prompt tokens.
    engine_timing: dict[str, Any] | None = None
    # Privacy: the output is kept as a hash (of the output token ids in process, of the streamed text
    # when served), so two runs' outputs can be compared; the text itself only with run.store_text.
    response_sha256: str | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    client_process: int | None = None  # served, run.client_processes > 1: which client process sent it
    # Served, streamed: each chunk that carried tokens, its arrival (same clock as token_times) and how
    # many tokens it carried (exact when the server returned token ids for every chunk, else one per
    # chunk with text); output_tokens is then the server's usage where given. A chunk of k tokens gives
    # each of them the same token time; their inter-token latency is defined in bench/measure/metrics.py.
    chunk_times: list[float] | None = None
    chunk_tokens: list[int] | None = None
    chunk_tokens_exact: bool | None = None
    retry_after: str | None = None  # an HTTP error's Retry-After header, as sent (the client never retries)
    # Conversations: the conversation (its index in its stream) and the turn (0: the first message); the
    # leading prompt tokens that repeat the previous turn's prompt and answer exactly (what a prefix cache
    # that kept them could serve); the oldest turns left out because the history outgrew the context; the
    # think time waited after the previous answer.
    conversation: int | None = None
    turn: int | None = None
    history_tokens: int | None = None
    dropped_turns: int | None = None
    think_time_s: float | None = None
    document: int | None = None  # shared documents: which document the prompt began with
    salt_tokens: int | None = None  # a salted prompt's salt (its first ids; input_tokens counts them)
    # Reasoning (served): the output tokens that were reasoning (reasoning_content, or inside <think>), and
    # when the first answer token came (first_token_time is the first token of either).
    reasoning_tokens: int | None = None
    first_answer_time: float | None = None
    # Structured answers: what was asked (json_schema, json_object, tools), whether the answer was valid,
    # and why not. Their length is the answer's own (output_tokens is a cap), so no short-output check.
    structured: str | None = None
    structured_valid: bool | None = None
    structured_problem: str | None = None

    @property
    def usage_mismatch(self) -> bool:
        """The server's usage disagrees with what was counted: for older records the streamed count;
        for records with chunk counts only where those are exact (token ids), as the usage is the count."""
        if self.usage_output_tokens is None:
            return False
        if self.chunk_tokens is None:
            return self.usage_output_tokens != self.output_tokens
        return bool(self.chunk_tokens_exact) and sum(self.chunk_tokens) != self.usage_output_tokens

    @property
    def send_lag(self) -> float | None:
        return None if self.sent_time is None else self.sent_time - self.submit_time

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def warmup(self) -> bool:
        return self.repetition < 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["token_times"] = [round(t, 7) for t in self.token_times]
        if self.chunk_times is not None:
            data["chunk_times"] = [round(t, 7) for t in self.chunk_times]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        # Fields a newer lokaal-bench added are skipped, not fatal: old readers still read new records.
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def write_records(path: Path, records: Iterable[RequestRecord]) -> None:
    """gzip JSONL, written to a temporary name and renamed, so a crash leaves no half file."""
    from bench import scrub
    from bench.atomic import atomic_path

    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as out:
        for record in records:  # an error text may quote what a server echoed: no secret goes to disk
            out.write(scrub.text(json.dumps(record.to_json(), separators=(",", ":"))) + "\n")


def read_records(path: Path) -> Iterator[RequestRecord]:
    """The records of a file; ResultSetError naming the file and line for one that is corrupt (bad gzip,
    bad JSON, a field of the wrong type), so a reader never computes with a broken record."""
    import zlib

    from bench.errors import ResultSetError

    number = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as src:
            for number, line in enumerate(src, start=1):
                if line.strip():
                    data = json.loads(line)
                    problem = record_problem(data)
                    if problem:
                        raise ResultSetError(f"{path}: corrupt record on line {number}: {problem}")
                    yield RequestRecord.from_json(data)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ResultSetError(f"{path}: corrupt records (after line {number}: {type(exc).__name__}: "
                             f"{exc})") from None


def record_problem(data: Any) -> str | None:
    """What is wrong with one stored record's JSON, if anything: not an object, a required field
    missing, a field of the wrong type."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for name, (kinds, items, required) in _field_kinds().items():
        if name not in data:
            if required:
                return f"no {name}"
            continue
        value = data[name]
        if not _is(value, kinds):
            return f"{name} is {type(value).__name__}, not {' or '.join(kinds)}"
        if items and isinstance(value, list) and not all(_is(v, items) for v in value):
            return f"{name} holds a value that is not {' or '.join(items)}"
    return None


def _is(value: Any, kinds: tuple[str, ...]) -> bool:
    checks = {"None": value is None, "bool": isinstance(value, bool), "str": isinstance(value, str),
              "dict": isinstance(value, dict), "list": isinstance(value, list),
              "int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool)}
    return any(checks.get(kind, True) for kind in kinds)


@cache
def _field_kinds() -> dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]]:
    """Per record field, from its annotation: the JSON kinds allowed, those of a list's items, required."""
    import dataclasses

    kinds = {}
    for f in dataclasses.fields(RequestRecord):
        allowed, items = [], ()
        for part in str(f.type).split("|"):
            part = part.strip()
            base, _, inner = part.partition("[")
            allowed.append(base)
            if base == "list":
                items = (inner.rstrip("]").strip(),)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kinds[f.name] = (tuple(allowed), items, required)
    return kinds
