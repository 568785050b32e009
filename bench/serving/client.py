"""An OpenAI-compatible streaming client on asyncio streams: one HTTP/1.1 keep-alive connection per
simulated user, every server-sent event timestamped (time.perf_counter) the moment it is read.

Timestamps are taken per SSE event, as vLLM's benchmark does. A chunk may carry more than one token
(vLLM sends what one engine step made, and its detokenizer may merge pieces): each chunk's arrival
and token count are kept (`chunk_times`, `chunk_tokens`); the count of a chunk is its token ids
where the server returns them (vLLM's `return_token_ids`), else one per chunk that carries text.
The server's own `usage` is the request's token count when it gives one (see
bench/scenarios/served.py; inter-token latency per token: bench/measure/metrics.py).

Reasoning is counted apart from the answer: a chunk whose delta carries `reasoning` or
`reasoning_content` (vLLM's reasoning parsers, DeepSeek's API) is reasoning; with `think_tags` the
answer's own text holds it, up to `</think>` (a server without a reasoning parser). The first answer
token's arrival is kept beside the first token's. Tool calls (`delta.tool_calls`) are gathered
per call, name and arguments, for the structured-answer check.

Whatever comes back, a request ends as a StreamResult: a reply the client cannot understand (a
status line that is not HTTP, an event that is not a JSON object, a chunk or event beyond the
limits below, bytes that are not UTF-8, an early close, a stall) is a failed request with its
reason, never an exception out of stream(); the cell goes on. HTTP errors (401, 429, 500, 503...)
are failed requests too, with any Retry-After header recorded; the client never retries, so an
open-loop schedule stays what it was.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

MAX_LINE_BYTES = 64 * 1024  # a status line, a header, a chunk-size line
MAX_HEADERS = 200
MAX_CHUNK_BYTES = 8 * 2**20  # one HTTP chunk
MAX_EVENT_BYTES = 2**20  # one server-sent event
MAX_BODY_BYTES = 16 * 2**20  # a whole non-streamed body
_EVENT_END = re.compile(rb"\r?\n\r?\n")


class ReplyError(Exception):
    """A reply the client cannot understand: the request fails with this as its reason."""


class ClosedUnanswered(ReplyError):
    """The connection closed before any status line: on a kept-alive connection, one the server had
    already closed (llama-server closes one after every streamed response), so it never saw the request."""


@dataclass
class StreamResult:
    sent: float
    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)  # per counted token: its chunk's arrival
    end: float | None = None
    usage_completion_tokens: int | None = None
    status: int | None = None
    error: str | None = None
    # The streamed text, piece by piece: hashed into the record, kept whole only with run.store_text.
    pieces: list[str] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk that carried tokens
    chunk_tokens: list[int] = field(default_factory=list)  # how many tokens each carried
    token_ids: list[int] = field(default_factory=list)
    ids_in_every_chunk: bool = True  # every token-carrying chunk returned its token ids: counts are exact
    retry_after: str | None = None
    done: bool = False  # [DONE] was read
    # Tokens the server said it generated so far (llama-server's per-chunk timings.predicted_n), when it says.
    server_counted: int = 0
    # Per chunk that carried tokens: its text, and whether it was reasoning (else answer).
    chunk_texts: list[str] = field(default_factory=list)
    chunk_reasoning: list[bool] = field(default_factory=list)
    reasoning_seen: bool = False  # the server sent reasoning apart (a reasoning field)
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)  # per call index: name, arguments
    prompt_token_ids: list[int] | None = None  # the prompt as the server tokenised it (vLLM's return_token_ids)
    usage_prompt_tokens: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def reasoning_tokens(self) -> int:
        return sum(k for k, reasoning in zip(self.chunk_tokens, self.chunk_reasoning, strict=True) if reasoning)

    @property
    def first_answer(self) -> float | None:
        """The arrival of the first chunk that carried answer tokens (not reasoning)."""
        return next((t for t, reasoning in zip(self.chunk_times, self.chunk_reasoning, strict=True)
                     if not reasoning), None)

    @property
    def answer_text(self) -> str:
        """The answer without its reasoning: what a structured answer is judged on."""
        return "".join(t for t, reasoning in zip(self.chunk_texts, self.chunk_reasoning, strict=True)
                       if not reasoning)

    def split_think_tags(self) -> None:
        """Reasoning inside the answer's text: every chunk up to the one that closes </think> is reasoning;
        without a </think>, an answer that opened <think> is all reasoning and any other is all answer."""
        text = ""
        closing = None
        for k, piece in enumerate(self.chunk_texts):
            text += piece
            if "</think>" in text:
                closing = k
                break
        if closing is None:
            thinking = self.text.lstrip().startswith("<think>")
            self.chunk_reasoning = [thinking] * len(self.chunk_texts)
            return
        self.chunk_reasoning = [k <= closing for k in range(len(self.chunk_texts))]
        # the text after </think> in the closing chunk is the answer's first piece
        tail = text.split("</think>", 1)[1]
        self.chunk_texts[closing] = self.chunk_texts[closing][:len(self.chunk_texts[closing]) - len(tail)]
        if tail:
            self.chunk_texts.insert(closing + 1, tail)
            self.chunk_reasoning.insert(closing + 1, False)
            self.chunk_times.insert(closing + 1, self.chunk_times[closing])
            self.chunk_tokens.insert(closing + 1, 0)

    @property
    def exact_token_ids(self) -> list[int] | None:
        """The output's token ids when the server returned them for every chunk."""
        return self.token_ids if self.chunk_tokens and self.ids_in_every_chunk else None


class Connection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int, api_key: str | None = None):
        self.host, self.port, self.api_key = host, port, api_key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.writer is None or self.writer.is_closing() or self.reader is None or self.reader.at_eof():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE_BYTES)
        return self.reader, self.writer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def _drop(self) -> None:
        """After a failed reply the connection's state is unknown: the next request opens a new one."""
        await self.close()
        self.reader = self.writer = None

    async def stream(self, path: str, payload: dict[str, Any], timeout_s: float = 600.0,
                     think_tags: bool = False) -> StreamResult:
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n"
                f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n")
        if self.api_key:
            head += f"authorization: Bearer {self.api_key}\r\n"
        result = StreamResult(sent=time.perf_counter())
        try:
            for attempt in (1, 2):
                reused = self.writer is not None and not self.writer.is_closing()
                reader, writer = await self._ensure()
                result.sent = time.perf_counter()
                try:
                    writer.write(head.encode() + b"\r\n" + body)
                    await writer.drain()
                    await asyncio.wait_for(self._read(reader, result), timeout_s)
                    break
                except (ConnectionError, asyncio.IncompleteReadError, ClosedUnanswered):
                    # sent once more, on a new connection, only when the server cannot have seen it
                    if attempt == 2 or not reused or result.status is not None:
                        raise
                    await self._drop()
        except asyncio.TimeoutError:
            if not result.done:  # (after [DONE] only the body's end was missing: the reply is whole)
                result.error = _timeout_reason(result, timeout_s)
            await self._drop()
        except ReplyError as exc:
            result.error = str(exc)
            await self._drop()
        except asyncio.CancelledError:
            await self._drop()
            raise
        except Exception as exc:  # a connection error, or a reply no rule above foresaw: this request fails
            result.error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            await self._drop()
        if think_tags and not result.reasoning_seen:
            result.split_think_tags()
        return result

    async def _read(self, reader: asyncio.StreamReader, result: StreamResult) -> None:
        status_line = await _line(reader)
        if not status_line:
            raise ClosedUnanswered("the server closed the connection without answering")
        result.status = _status(status_line)
        headers = await _headers(reader)
        if "retry-after" in headers:
            result.retry_after = headers["retry-after"][:100]
        if result.status != 200:
            raw = await _body(reader, headers)
            retry = f" (Retry-After: {result.retry_after})" if result.retry_after is not None else ""
            result.error = f"HTTP {result.status}{retry}: {_shown(raw)}"
            return
        if "text/event-stream" not in headers.get("content-type", ""):
            self._whole(await _body(reader, headers), result)
            return
        buffer = b""
        async for piece in _pieces(reader, headers):  # read to the body's end, so keep-alive stays in step
            now = time.perf_counter()
            buffer += piece
            while not result.done and (match := _EVENT_END.search(buffer)):
                event, buffer = buffer[:match.start()], buffer[match.end():]
                if self._event(event, now, result):
                    result.done = True
                    result.end = result.token_times[-1] if result.token_times else now
            if len(buffer) > MAX_EVENT_BYTES and not result.done:
                raise ReplyError(f"an event longer than {MAX_EVENT_BYTES} bytes (the client's limit)")
            if result.done:
                buffer = b""
        if not result.done:
            raise ReplyError(f"the stream ended without [DONE] after {len(result.token_times)} token(s)")

    @staticmethod
    def _whole(raw: bytes, result: StreamResult) -> None:
        """A reply that is not streamed: one JSON object with all the choices."""
        data = _json_object(raw, "the reply")
        result.end = time.perf_counter()
        result.first_token = result.end
        result.usage_completion_tokens = _usage_tokens(data)
        result.usage_prompt_tokens = _usage_tokens(data, "prompt_tokens")
        for choice in _choices(data):
            _take_tool_calls(choice, result)
            tokens, ids = _chunk_tokens(choice)
            result.pieces.append(_choice_text(choice))
            result.ids_in_every_chunk &= ids is not None
            result.token_ids += ids or []
            if tokens:
                result.chunk_times.append(result.end)
                result.chunk_tokens.append(tokens)
                result.chunk_texts.append(_choice_text(choice))
                result.chunk_reasoning.append(False)
                result.token_times += [result.end] * tokens
        if not result.token_times:
            result.token_times = [result.end]

    @staticmethod
    def _event(event: bytes, now: float, result: StreamResult) -> bool:
        """Record one SSE event; True at [DONE]. ReplyError for an event that is not understood."""
        for line in event.split(b"\n"):
            line = line.rstrip(b"\r")
            if not line.startswith(b"data:"):
                continue  # comments (": keep-alive"), event names, ids: nothing to count
            data = line[5:].strip()
            if data == b"[DONE]":
                return True
            message = _json_object(data, "an event")
            if message.get("error") is not None:
                raise ReplyError(f"the server sent an error event: {_shown(json.dumps(message['error']).encode())}")
            usage = _usage_tokens(message)
            if usage is not None:
                result.usage_completion_tokens = usage
            # llama-server holds back a token that ends inside a UTF-8 character and sends it with the next:
            # its per-chunk count (timings_per_token) is then exact where the chunks are not.
            counted = _server_count(message)
            prompt_usage = _usage_tokens(message, "prompt_tokens")
            if prompt_usage is not None:
                result.usage_prompt_tokens = prompt_usage
            prompt_ids = message.get("prompt_token_ids")
            if isinstance(prompt_ids, list) and result.prompt_token_ids is None:
                result.prompt_token_ids = [i for i in prompt_ids if isinstance(i, int)]
            for choice in _choices(message):
                _take_tool_calls(choice, result)
                tokens, ids = _chunk_tokens(choice)
                if counted is not None and ids is None:
                    tokens = max(0, counted - result.server_counted)
                reasoning = _reasoning_text(choice)
                if tokens and result.first_token is None:
                    result.first_token = now
                if tokens:
                    result.chunk_times.append(now)
                    result.chunk_tokens.append(tokens)
                    result.ids_in_every_chunk &= ids is not None
                    result.token_ids += ids or []
                    result.chunk_texts.append(_choice_text(choice) or "")
                    result.chunk_reasoning.append(bool(reasoning) and not _choice_text(choice))
                result.reasoning_seen |= bool(reasoning)
                result.token_times += [now] * tokens
                result.pieces.append(_choice_text(choice))
            if counted is not None:
                result.server_counted = max(result.server_counted, counted)
        return False


# --- reading the reply ----------------------------------------------------------------------------


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # asyncio's limit: a line without an end in MAX_LINE_BYTES
        raise ReplyError(f"a header or chunk-size line longer than {MAX_LINE_BYTES} bytes") from None


def _status(line: bytes) -> int:
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not re.fullmatch(rb"[1-5][0-9][0-9]", parts[1]):
        raise ReplyError(f"a status line that is not HTTP: {_shown(line.strip())}")
    return int(parts[1])


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = await _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ReplyError("the server closed the connection in the middle of the headers")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ReplyError(f"more than {MAX_HEADERS} headers")


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    body = b""
    async for piece in _pieces(reader, headers):
        body += piece
        if len(body) > MAX_BODY_BYTES:
            raise ReplyError(f"a body longer than {MAX_BODY_BYTES} bytes (the client's limit)")
    return body


async def _pieces(reader: asyncio.StreamReader, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """The response body as it arrives: chunked transfer decoding, content-length, or until close."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await _line(reader)
            if not line:
                raise ReplyError("the server closed the connection in the middle of the reply")
            size_text = line.split(b";")[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise ReplyError(f"a chunk size that is not hexadecimal: {_shown(line.strip())}")
            size = int(size_text, 16)
            if size == 0:
                await _line(reader)  # the empty line after the last chunk (no trailers expected)
                return
            if size > MAX_CHUNK_BYTES:
                raise ReplyError(f"a chunk of {size} bytes, beyond the client's limit of {MAX_CHUNK_BYTES}")
            try:
                yield await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                raise ReplyError("the server closed the connection in the middle of a chunk") from None
            await _line(reader)
    elif "content-length" in headers:
        length_text = headers["content-length"]
        if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
            raise ReplyError(f"a content-length the client does not accept: {length_text[:40]!r}")
        try:
            yield await reader.readexactly(int(length_text))
        except asyncio.IncompleteReadError:
            raise ReplyError("the server closed the connection before the body's end") from None
    else:  # neither: the body runs until the server closes the connection
        while piece := await reader.read(65536):
            yield piece


# --- reading the JSON ------------------------------------------------------------------------------


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except UnicodeDecodeError:
        raise ReplyError(f"{what} that is not UTF-8: {_shown(data)}") from None
    except ValueError:
        raise ReplyError(f"{what} that is not JSON: {_shown(data)}") from None
    except RecursionError:
        raise ReplyError(f"{what} nested too deeply to read") from None
    if not isinstance(message, dict):
        raise ReplyError(f"{what} that is not a JSON object: {_shown(data)}")
    return message


def _choices(message: dict[str, Any]) -> list[dict[str, Any]]:
    choices = message.get("choices")
    if choices is None:
        return []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ReplyError(f"'choices' that is not a list of objects: {_shown(json.dumps(choices).encode())}")
    return choices


def _usage_tokens(message: dict[str, Any], key: str = "completion_tokens") -> int | None:
    usage = message.get("usage")
    count = usage.get(key) if isinstance(usage, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None


def _server_count(message: dict[str, Any]) -> int | None:
    """llama-server's running count of generated tokens in a chunk (timings_per_token), if it sent one."""
    timings = message.get("timings")
    count = timings.get("predicted_n") if isinstance(timings, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
def _reasoning_text(choice: dict[str, Any]) -> str | None:
    """The reasoning a streamed choice carries apart from its answer (vLLM: `reasoning`; DeepSeek's API and
    older vLLM: `reasoning_content`)."""
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice.get("message")
    if not isinstance(delta, dict):
        return None
    for key in ("reasoning", "reasoning_content"):
        if isinstance(delta.get(key), str):
            return delta[key]
    return None


def _tool_call_text(choice: dict[str, Any]) -> str | None:
    """What a choice's tool-call delta adds (a name, a piece of the arguments); None when it has none."""
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice.get("message")
    calls = delta.get("tool_calls") if isinstance(delta, dict) else None
    if not isinstance(calls, list) or not calls:
        return None
    text = ""
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            text += str(function.get("name") or "") + str(function.get("arguments") or "")
    return text


def _take_tool_calls(choice: dict[str, Any], result: StreamResult) -> None:
    """Gather tool calls by their index: a name once, arguments in pieces."""
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice.get("message")
    calls = delta.get("tool_calls") if isinstance(delta, dict) else None
    for position, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, dict):
            continue
        index = call.get("index") if isinstance(call.get("index"), int) else position
        entry = result.tool_calls.setdefault(index, {"name": "", "arguments": ""})
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if isinstance(function.get("name"), str):
            entry["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            entry["arguments"] += function["arguments"]


def _text_field(choice: dict[str, Any]) -> str | None:
    """The text one choice carries (completions `text`, chat `delta.content` streamed or `message.content`),
    None when it carries no text field at all."""
    delta, message = choice.get("delta"), choice.get("message")
    for text in (choice.get("text"), delta.get("content") if isinstance(delta, dict) else None,
                 message.get("content") if isinstance(message, dict) else None):
        if isinstance(text, str):
            return text
    return None


def _choice_text(choice: dict[str, Any]) -> str:
    return _text_field(choice) or ""


def _chunk_tokens(choice: dict[str, Any]) -> tuple[int, list[int] | None]:
    """How many output tokens one streamed choice carries, and their ids when the server returns them.
    vLLM sends one chunk per engine step, and its text may be empty while the detokenizer holds back an
    incomplete character, so an empty text still counts; the token ids, when returned, are exact. A
    closing chunk that only carries the finish reason (llama.cpp, TGI) counts for nothing."""
    ids = choice.get("token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return len(ids), ids
    text = _text_field(choice)
    if text is None:
        text = _reasoning_text(choice) or _tool_call_text(choice)
    if text is None:
        return 0, None
    delta = choice.get("delta")
    if not text and isinstance(delta, dict) and delta.get("role"):
        return 0, None  # the chat route's opening chunk names the role and carries no token (vLLM, OpenAI)
    return (1 if text or choice.get("finish_reason") is None else 0), None


def _shown(raw: bytes, limit: int = 300) -> str:
    """A reply's bytes as they may stand in a reason: decoded with replacement, on one line, cut."""
    text = raw[:limit].decode("utf-8", errors="replace")
    return " ".join(text.split()) + ("..." if len(raw) > limit else "")


def _timeout_reason(result: StreamResult, timeout_s: float) -> str:
    if result.status is None:
        return f"timed out after {timeout_s:g} s (request_timeout_s) with no reply from the server"
    return (f"timed out after {timeout_s:g} s (request_timeout_s): the reply stalled after "
            f"{len(result.token_times)} token(s)")
