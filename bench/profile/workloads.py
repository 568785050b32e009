"""What is asked: prompts as token ids with seeded length distributions, or real text from a file.

Synthetic prompts are distinct per request from their first token on, so no request shares a
prefix (and a prefix cache) with another unless the workload asks for a shared prefix or shared
documents (bench/profile/documents.py). A salted workload begins every prompt with SALT_TOKENS ids
of its own, drawn from the cell's nonce, so no cache (a server's prefix or response cache, this run's
or a later one's) can serve it; prompt hashes leave the salt out, so two runs still show they asked
the same. Conversations are planned in bench/profile/conversations.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.profile.workload_specs import Choice, Fixed, LengthDist, Normal, Uniform, WorkloadSpec

SALT_TOKENS = 8


@dataclass(frozen=True)
class TurnInfo:
    """Where a request stands in its conversation."""

    conversation: int  # the conversation's index in its stream
    turn: int  # 0 for the first message
    history_tokens: int  # leading prompt tokens that repeat the previous turn's prompt and answer exactly
    dropped_turns: int  # the oldest turns left out because the history outgrew the context
    think_time_s: float  # waited after the previous answer before this message


@dataclass(frozen=True)
class Request:
    index: int
    prompt_token_ids: list[int]
    output_tokens: int
    text: str | None = None  # the prompt as written, for prompt files (kept only with run.store_text)
    salt_tokens: int = 0  # the prompt's first ids are its salt (left out of its hash)
    document: int | None = None  # shared documents: the document the prompt begins with
    options: dict[str, Any] | None = None  # structured answers: the body's response_format or tools (chat route)
    messages: list[dict[str, str]] | None = None  # a conversation's turn: its chat messages (chat route)
    turn: TurnInfo | None = None

    @property
    def unsalted_ids(self) -> list[int]:
        return self.prompt_token_ids[self.salt_tokens:]

    @property
    def structured(self) -> str | None:
        """json_schema, json_object or tools: judged on validity, not on an exact length."""
        options = self.options or {}
        if options.get("tools"):
            return "tools"
        return (options.get("response_format") or {}).get("type")


@dataclass(frozen=True)
class TokenSpace:
    """The ids a synthetic prompt may use: the model's vocabulary without its special tokens."""

    vocab_size: int
    special_ids: frozenset[int] = frozenset()

    def draw(self, rng: random.Random, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            token = rng.randrange(self.vocab_size)
            if token not in self.special_ids:
                out.append(token)
        return out


def sample_length(dist: LengthDist, rng: random.Random) -> int:
    if isinstance(dist, Fixed):
        return dist.value
    if isinstance(dist, Uniform):
        return rng.randint(dist.min, dist.max)
    if isinstance(dist, Normal):
        value = round(rng.gauss(dist.mean, dist.std))
        upper = dist.max or value
        return int(min(max(value, dist.min), upper))
    if isinstance(dist, Choice):
        return int(rng.choice(dist.values))
    raise ValueError(f"unknown length distribution {dist!r}")


def request_stream(workload: WorkloadSpec, space: TokenSpace, stream: int = 0,
                   encode: Callable[[str], list[int]] | None = None, anchor: int = 0,
                   salt_nonce: str = "") -> Iterator[Request]:
    """The endless seeded request stream of a workload: synthetic token ids, or a prompt file (which needs
    `encode`). `stream` separates warm-up from measured requests and repetitions. However many requests a
    run takes, its first ones are the same everywhere; `anchor` (the repetition's minimum count) places a
    prompt file's cycle as `file_requests(workload, anchor, ...)` always has. A salted workload's salt is
    drawn from `salt_nonce` (the cell's own)."""
    if workload.prompts_file:
        assert encode is not None, "a prompt file needs the engine's tokenizer"
        requests = _file_stream(workload, encode, stream, anchor)
    else:
        requests = _synthetic_stream(workload, space, stream)
    options = structured_options(workload)
    for request in requests:
        if workload.salt:
            salt = space.draw(random.Random(f"{salt_nonce}/{stream}/{request.index}"), SALT_TOKENS)
            request = replace(request, prompt_token_ids=salt + request.prompt_token_ids, salt_tokens=SALT_TOKENS)
        yield replace(request, options=options) if options else request


def structured_options(workload: WorkloadSpec) -> dict[str, Any] | None:
    """The request body's response_format or tools of a workload that asks for structured answers."""
    from bench.profile.structured_specs import request_options

    return request_options(workload.response_format, workload.tools, workload.tool_choice) or None


def _synthetic_stream(workload: WorkloadSpec, space: TokenSpace, stream: int) -> Iterator[Request]:
    from bench.profile.documents import DocumentDraw, document_pool

    rng = random.Random(f"{workload.seed}/{stream}")
    prefix = space.draw(random.Random(f"{workload.seed}/prefix"), workload.shared_prefix_tokens)
    documents = workload.documents
    pool = document_pool(documents, space, workload.seed) if documents is not None else []
    draw = DocumentDraw(documents) if documents is not None else None
    used_heads: set[tuple[int, ...]] = set()
    for i in itertools.count():
        assert workload.input_tokens is not None
        document = draw(rng) if draw is not None else None
        lead = prefix + (pool[document] if document is not None else [])
        n_in = max(sample_length(workload.input_tokens, rng) + (len(lead) - len(prefix)), len(lead) + 1)
        n_out = sample_length(workload.output_tokens, rng)
        body = space.draw(rng, n_in - len(lead))
        head = tuple(body[:4])
        while head in used_heads and len(body) >= 1:  # keep every request's first tokens distinct
            body[0] = space.draw(rng, 1)[0]
            head = tuple(body[:4])
        used_heads.add(head)
        yield Request(i, lead + body, n_out, document=document)


def synthetic_requests(workload: WorkloadSpec, count: int, space: TokenSpace, stream: int = 0) -> list[Request]:
    """The first `count` requests of a synthetic workload's stream."""
    return list(itertools.islice(request_stream(workload, space, stream), count))


def read_prompts_file(path: Path) -> list[tuple[str, int | None]]:
    """(prompt text, output tokens or None) per non-empty line of a JSONL prompt file."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            text = entry["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: expected a JSON object with a 'prompt' field ({exc})") from None
        entries.append((text, entry.get("output_tokens")))
    if not entries:
        raise ValueError(f"{path}: no prompts")
    return entries


def _file_stream(workload: WorkloadSpec, encode: Callable[[str], list[int]], stream: int,
                 anchor: int) -> Iterator[Request]:
    """Prompts cycled from the file: request i of a stream takes entry (stream * anchor + i) mod entries."""
    entries = read_prompts_file(Path(workload.prompts_file or ""))
    rng = random.Random(f"{workload.seed}/{stream}")
    encoded = [encode(text) for text, _ in entries]
    for i in itertools.count():
        k = (stream * anchor + i) % len(entries)
        n_out = entries[k][1] or sample_length(workload.output_tokens, rng)
        yield Request(i, encoded[k], int(n_out), entries[k][0])


def file_requests(
    workload: WorkloadSpec, count: int, encode: Callable[[str], list[int]], stream: int = 0
) -> list[Request]:
    """Requests from a JSONL prompt file ({"prompt": text, "output_tokens": n?}), cycled to `count`."""
    return list(itertools.islice(_file_stream(workload, encode, stream, count), count))


def token_ids_sha256(token_ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(token_ids), separators=(",", ":")).encode()).hexdigest()


def prompts_digest(entries: Iterable[tuple[int, int, str]]) -> str:
    """One hash over (repetition, request, prompt hash) triples: proves two runs asked the same."""
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()
