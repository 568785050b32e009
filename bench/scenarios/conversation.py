"""Conversations as load: each user holds one conversation at a time, every turn resending the history.

Served (engine `openai`, always on the chat-completions route, as chat messages the server renders with
the model's chat template):
- concurrency: `users` users, each starting its next conversation when its last one ends, waiting each
  turn's think time after an answer before the next message;
- rate: conversations arrive on the scenario's schedule (poisson or constant), each then held by its user.
  A conversation's first turn is measured from its scheduled arrival; later turns from when the user
  (answer plus think time) sends them.
In process (single-stream: one conversation at a time; offline: `batch_size` conversations side by side,
turn by turn): the prompts are the chat template's token ids, so each turn begins with the previous
prompt and answer token for token; think time is not waited (nothing else runs meanwhile).

The count floor counts turns; a conversation that has begun is finished (unless a stop rule or
run.max_duration_s ends it), so a repetition may send a few turns more than the floor.
Conversations run in one client process (each is a chain of dependent requests).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

from bench.models.chat_format import ChatFormat, load_chat_format
from bench.profile.conversations import conversation_stream
from bench.profile.workloads import Request
from bench.results.records import RequestRecord
from bench.scenarios.common import ScenarioContext, batch_records
from bench.scenarios.conversation_state import ConversationState, TurnTooLong, common_prefix
from bench.serving.client import Connection, StreamResult

_FORMATS: dict[str, tuple[ChatFormat, Any]] = {}


def chat_of(ctx: ScenarioContext) -> tuple[ChatFormat, Any]:
    """The model directory's chat format and tokenizer (loaded once per process)."""
    if ctx.model_dir is None:
        raise RuntimeError("a conversation needs the model's directory (its tokenizer and chat template)")
    key = str(ctx.model_dir)
    if key not in _FORMATS:
        _FORMATS[key] = load_chat_format(ctx.model_dir)
    return _FORMATS[key]


def conversations(ctx: ScenarioContext, stream: int) -> Iterator[ConversationState]:
    """The seeded conversations of a stream (0: warm-up; r + 1: repetition r), each ready to send."""
    assert ctx.workload is not None
    chat, tokenizer = chat_of(ctx)

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    for plan in conversation_stream(ctx.workload, stream):
        rng = random.Random(f"{ctx.salt_nonce}/{stream}/{plan.index}")
        salt = [rng.choice(chat.words) for _ in range(8)] if ctx.workload.salt else []
        if salt and chat.trims:
            salt[0] = rng.choice(chat.bare_words)
        yield ConversationState(plan, chat, encode, decode, ctx.context_tokens,
                                f"{ctx.workload.seed}/{stream}", salt)


def _unsent(ctx: ScenarioContext, state: ConversationState, turn: int, repetition: int, reason: str) -> RequestRecord:
    """A turn that could not be sent (it does not fit the context): a failed request saying why."""
    planned = state.plan.turns[turn]
    now = time.perf_counter() - ctx.t0
    return RequestRecord(request_id=state.plan.first_request + turn, repetition=repetition, batch_index=0,
                         batch_size=1, input_tokens=0, expected_output_tokens=planned.output_tokens, submit_time=now,
                         first_token_time=None, end_time=None, token_times=[], output_tokens=0,
                         finish_reason="error", error=reason, conversation=state.plan.index, turn=turn,
                         dropped_turns=state.dropped)


def _answer_ids(result: StreamResult, encode: Any) -> list[int]:
    ids = result.exact_token_ids
    return list(ids) if ids is not None else encode(result.answer_text)


# --- served ---------------------------------------------------------------------------------------------


async def _hold(ctx: ScenarioContext, state: ConversationState, connection: Connection, endpoint: str, prefix: str,
                repetition: int, records: list[RequestRecord], first_scheduled: float, total: int,
                started: float) -> int:
    """Send a conversation's turns one after another (think time between); the turns sent."""
    from bench.scenarios.served import _phase, _record, served_engine, should_stop

    engine = served_engine(ctx)
    scheduled = first_scheduled
    sent = 0
    for turn in range(len(state.plan.turns)):
        if turn and should_stop(ctx, started, records, repetition):
            break  # a stop rule or run.max_duration_s: the conversation ends here
        think = state.plan.turns[turn - 1].think_time_s if turn else 0.0
        if think:
            await asyncio.sleep(think)
            scheduled = time.perf_counter()
        try:
            request = state.request(turn, think)
        except TurnTooLong as exc:
            records.append(_unsent(ctx, state, turn, repetition, str(exc)))
            break
        result = await connection.stream(f"{prefix}/chat/completions", engine.payload(request),
                                         engine.request_timeout_s, engine.think_tags)
        record = _record(ctx, request, result, repetition, scheduled, endpoint, request.index)
        records.append(record)
        sent += 1
        ctx.progress(_phase(ctx, repetition), len(records), total)
        if not result.ok:
            break  # a failed turn has no answer to continue from
        prompt_ids = result.prompt_token_ids or request.prompt_token_ids
        if result.prompt_token_ids:  # the server's own tokenisation: what its prefix cache saw
            previous = state.previous
            record.history_tokens = common_prefix(prompt_ids, previous) if previous is not None else 0
        state.answered(prompt_ids, _answer_ids(result, state.encode), result.answer_text)
        scheduled = time.perf_counter()
    return sent


async def _closed(ctx: ScenarioContext, plans: Iterator[ConversationState], users: int, repetition: int,
                  records: list[RequestRecord], floor: int | None) -> None:
    from bench.scenarios.served import served_engine, should_stop

    engine = served_engine(ctx)
    started = time.perf_counter()
    issued = 0

    def more() -> bool:
        if floor is None:  # warm-up: one conversation
            return issued == 0
        return ctx.keep_issuing(started, issued, floor)

    async def user(number: int) -> None:
        nonlocal issued
        host, port, prefix = engine.address(number)
        connection = Connection(host, port, engine.api_key)
        try:
            while more() and not should_stop(ctx, started, records, repetition):
                state = next(plans)
                issued += len(state.plan.turns)  # claimed at the start, so other users see the floor coming
                await _hold(ctx, state, connection, f"{host}:{port}", prefix, repetition, records,
                            time.perf_counter(), floor or issued, started)
        finally:
            await connection.close()

    await asyncio.gather(*(user(n) for n in range(users)))


def _schedule(ctx: ScenarioContext, plans: Iterator[ConversationState], offsets: Iterator[float]
              ) -> list[tuple[ConversationState, float]]:
    """Conversation arrivals until both floors hold (turns counted), none after run.max_duration_s."""
    plan = ctx.plan
    chosen: list[tuple[ConversationState, float]] = []
    turns = 0
    for state, offset in zip(plans, offsets, strict=False):
        if plan.max_duration_s is not None and offset >= plan.max_duration_s and chosen:
            break
        if turns >= plan.min_requests_per_repetition and chosen and chosen[-1][1] >= plan.min_duration_per_repetition_s:
            break
        chosen.append((state, offset))
        turns += len(state.plan.turns)
    return chosen


async def _open(ctx: ScenarioContext, schedule: list[tuple[ConversationState, float]], repetition: int,
                records: list[RequestRecord]) -> None:
    from bench.scenarios.served import served_engine, should_stop
    from bench.serving.workers import START_MARGIN_S

    engine = served_engine(ctx)
    start = time.perf_counter() + START_MARGIN_S
    total = sum(len(s.plan.turns) for s, _ in schedule)

    async def arrive(k: int, state: ConversationState, offset: float) -> None:
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if should_stop(ctx, start, records, repetition):
            return
        host, port, prefix = engine.address(k)
        connection = Connection(host, port, engine.api_key)
        try:
            await _hold(ctx, state, connection, f"{host}:{port}", prefix, repetition, records, start + offset, total,
                        start)
        finally:
            await connection.close()

    await asyncio.gather(*(arrive(k, s, o) for k, (s, o) in enumerate(schedule)))


def _count(records: list[RequestRecord]) -> list[RequestRecord]:
    return sorted(records, key=lambda r: r.request_id)


def run_served(ctx: ScenarioContext) -> list[RequestRecord]:
    from bench.scenarios.served import arrival_stream

    point = ctx.scenario
    warm_stream = conversations(ctx, 0)

    def warm(index: int) -> list[RequestRecord]:
        done: list[RequestRecord] = []
        asyncio.run(_closed(ctx, warm_stream, 1, -1, done, None))
        for record in done:
            record.batch_index = index
        return done

    records = ctx.warmup_batches(warm)
    for repetition in ctx.repetition_indices(records):
        stream = conversations(ctx, repetition + 1)
        started = time.perf_counter()
        done: list[RequestRecord] = []
        why = "conversations: one client process (each is a chain of dependent turns)"
        if point.kind == "concurrency":
            asyncio.run(_closed(ctx, stream, point.users, repetition, done, ctx.plan.min_requests_per_repetition))
            load = {"users": float(point.users)}
        else:
            offsets = arrival_stream(point.rate, point.arrival, point.burstiness, repetition)
            asyncio.run(_open(ctx, _schedule(ctx, stream, offsets), repetition, done))
            load = {"conversations_per_s": float(point.rate)}
        ctx.client_points.append({"repetition": repetition, "processes": 1, "reason": why, "load": load})
        ctx.note_repetition(repetition, started, len(done))
        records += _count(done)
    return records


# --- in process -----------------------------------------------------------------------------------------


def run_in_process(ctx: ScenarioContext, batch_size: int) -> list[RequestRecord]:
    """`batch_size` conversations side by side, turn by turn, each turn one batch of their prompts."""

    def batch(states: list[ConversationState], repetition: int, index: int) -> list[RequestRecord]:
        out: list[RequestRecord] = []
        for turn in range(max(len(s.plan.turns) for s in states)):
            live: list[tuple[ConversationState, Request]] = []
            for state in states:
                if turn >= len(state.plan.turns) or len(state.history) < turn:
                    continue  # finished, or an earlier turn could not be sent
                try:
                    live.append((state, state.request(turn, 0.0)))
                except TurnTooLong as exc:
                    out.append(_unsent(ctx, state, turn, repetition, str(exc)))
            if not live:
                break
            requests = [r for _, r in live]
            result = ctx.engine.generate([r.prompt_token_ids for r in requests], [r.output_tokens for r in requests])
            rows = batch_records(result, requests, ctx.t0, repetition, index, ctx.decoder())
            for row, (state, request) in enumerate(live):
                ids = list((result.output_token_ids or [[]] * len(requests))[row])
                state.answered(request.prompt_token_ids, ids, state.decode(ids))
            out += rows
        return out

    warm_stream = conversations(ctx, 0)
    records = ctx.warmup_batches(lambda index: batch(list(itertools.islice(warm_stream, batch_size)), -1, index))
    for repetition in ctx.repetition_indices(records):
        stream = conversations(ctx, repetition + 1)
        records += ctx.sequential_repetition(repetition, lambda index, stream=stream, repetition=repetition: batch(
            list(itertools.islice(stream, batch_size)), repetition, index))
    return records
