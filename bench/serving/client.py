"""An OpenAI-compatible streaming client on asyncio streams: one HTTP/1.1 keep-alive connection per
simulated user, every server-sent event timestamped (time.perf_counter) the moment it is read.

Timestamps are taken per SSE event, as vLLM's benchmark does; the server's reported usage is kept
beside the counted events so a mismatch can be recorded rather than hidden.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamResult:
    sent: float
    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)
    end: float | None = None
    usage_completion_tokens: int | None = None
    status: int | None = None
    error: str | None = None
    # The streamed text, piece by piece: hashed into the record, kept whole only with run.store_text.
    pieces: list[str] = field(default_factory=list)
    # Tokens the server said it generated so far (llama-server's per-chunk timings.predicted_n), when it says.
    server_counted: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Connection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int, api_key: str | None = None):
        self.host, self.port, self.api_key = host, port, api_key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.writer is None or self.writer.is_closing() or self.reader is None or self.reader.at_eof():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        return self.reader, self.writer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def stream(self, path: str, payload: dict[str, Any], timeout_s: float = 600.0) -> StreamResult:
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
                writer.write(head.encode() + b"\r\n" + body)
                await writer.drain()
                try:
                    await asyncio.wait_for(self._read(reader, result), timeout_s)
                    break
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    # A kept-alive connection the server had already closed (llama-server closes one after
                    # every streamed response): it never saw the request, so send it once more on a new one.
                    if attempt == 2 or not reused or result.status is not None:
                        raise exc from None
                    await self.close()
                    self.writer = None
        except asyncio.TimeoutError:
            result.error = f"timed out after {timeout_s:g} s"
            await self.close()
            self.writer = None
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            await self.close()
            self.writer = None
        return result

    async def _read(self, reader: asyncio.StreamReader, result: StreamResult) -> None:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        result.status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if result.status != 200:
            raw = await _body(reader, headers)
            result.error = f"HTTP {result.status}: {raw[:300].decode(errors='replace')}"
            return
        if "text/event-stream" not in headers.get("content-type", ""):
            data = json.loads(await _body(reader, headers))
            result.end = time.perf_counter()
            result.first_token = result.end
            result.token_times = [result.end]
            result.usage_completion_tokens = (data.get("usage") or {}).get("completion_tokens")
            result.pieces = [_choice_text(choice) for choice in data.get("choices") or []]
            return
        buffer, done = b"", False
        async for piece in _pieces(reader, headers):  # read to the body's end, so keep-alive stays in step
            now = time.perf_counter()
            buffer += piece
            while not done and b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if self._event(event, now, result):
                    done = True
                    result.end = result.token_times[-1] if result.token_times else now
        if not done:
            result.error = "the stream ended without [DONE]"

    @staticmethod
    def _event(event: bytes, now: float, result: StreamResult) -> bool:
        """Record one SSE event; True at [DONE]."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return True
            message = json.loads(data)
            if message.get("usage"):
                result.usage_completion_tokens = message["usage"].get("completion_tokens")
            # llama-server holds back a token that ends inside a UTF-8 character and sends it with the next:
            # its per-chunk count (timings_per_token) is then exact where the chunks are not.
            counted = (message.get("timings") or {}).get("predicted_n")
            for choice in message.get("choices") or []:
                tokens = _chunk_tokens(choice) if counted is None else max(0, int(counted) - result.server_counted)
                if tokens and result.first_token is None:
                    result.first_token = now
                result.token_times += [now] * tokens
                result.pieces.append(_choice_text(choice))
            if counted is not None:
                result.server_counted = max(result.server_counted, int(counted))
        return False


def _text_field(choice: dict[str, Any]) -> str | None:
    """The text one choice carries (completions `text`, chat `delta.content` streamed or `message.content`),
    None when it carries no text field at all."""
    for text in (choice.get("text"), (choice.get("delta") or {}).get("content"),
                 (choice.get("message") or {}).get("content")):
        if isinstance(text, str):
            return text
    return None


def _choice_text(choice: dict[str, Any]) -> str:
    return _text_field(choice) or ""


def _chunk_tokens(choice: dict[str, Any]) -> int:
    """How many output tokens one streamed choice carries. vLLM sends one chunk per engine step, and
    its text may be empty while the detokenizer holds back an incomplete character, so an empty text
    still counts; the token ids, when the server returns them, are exact. A closing chunk that only
    carries the finish reason (llama.cpp, TGI) counts for nothing."""
    if isinstance(choice.get("token_ids"), list):
        return len(choice["token_ids"])
    text = _text_field(choice)
    if text is None:
        return 0
    return 1 if text or choice.get("finish_reason") is None else 0


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    return b"".join([piece async for piece in _pieces(reader, headers)])


async def _pieces(reader: asyncio.StreamReader, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """The response body as it arrives: chunked transfer decoding, or content-length."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            yield await reader.readexactly(size)
            await reader.readline()
    else:
        yield await reader.readexactly(int(headers.get("content-length", "0")))
