"""A built-in OpenAI-compatible streaming endpoint that does no model work: it answers each
completion with a configured time to first token and inter-token latency, on loopback. Measuring
it tells how far the client's own timing can be trusted, and how much load it can generate.

    python -m bench.serving.calibration_server --ttft 0.05 --itl 0.01   # prints its port, serves until killed

Chunks are scheduled at absolute times from the request's arrival (first at +TTFT, then every ITL),
so the server's own delays do not accumulate; the response is chunked SSE like vLLM's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


class CalibrationServer:
    def __init__(self, ttft_s: float, itl_s: float, slots: int | None = None, errors: float = 0.0):
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.requests = 0
        # A failing server for testing stop rules: this fraction of completions answer HTTP 500, spread
        # evenly (request n fails when n * errors crosses an integer), so the count is exact.
        self.errors = errors
        # A known capacity for testing capacity searches: at most `slots` completions at once, the
        # rest wait in line (and their TTFT grows), like a server whose batch is full.
        self.slots = asyncio.Semaphore(slots) if slots else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: many requests per connection
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, body, arrived = request
                await self._respond(writer, method, path, body, arrived)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, method: str, path: str, body: dict[str, Any],
                       arrived: float) -> None:
        if method == "GET" and path in ("/health", "/v1/models"):
            models = {"object": "list", "data": [{"id": "calibration", "object": "model"}]}
            await _send_json(writer, 200, {} if path == "/health" else models)
            return
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return
        self.requests += 1
        if int(self.requests * self.errors) != int((self.requests - 1) * self.errors):
            await _send_json(writer, 500, {"error": {"message": "calibration endpoint: a planned failure"}})
            return
        wanted = "messages" if path.endswith("chat/completions") else "prompt"
        if wanted not in body:  # as real servers do: a chat body on the completions route is an error
            await _send_json(writer, 400, {"error": {"message": f"{path} needs '{wanted}'"}})
            return
        if self.slots is not None:
            async with self.slots:
                await self._complete(writer, body, path, time.perf_counter())
            return
        await self._complete(writer, body, path, arrived)

    async def _complete(self, writer: asyncio.StreamWriter, body: dict[str, Any], path: str, arrived: float) -> None:
        tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        chat = path.endswith("chat/completions")
        if not body.get("stream"):
            await _sleep_until(arrived + self.ttft_s + self.itl_s * (tokens - 1))
            await _send_json(writer, 200, _final(tokens, chat))
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for index in range(tokens):
            await _sleep_until(arrived + self.ttft_s + self.itl_s * index)
            _write_chunk(writer, _event(_delta(index, chat)))
            await writer.drain()
        if (body.get("stream_options") or {}).get("include_usage"):
            _write_chunk(writer, _event({"choices": [], "usage": _usage(tokens)}))
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _delta(index: int, chat: bool) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": f" t{index}"}} if chat else {"index": 0, "text": f" t{index}"}
    return {"id": "cal", "object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}


def _final(tokens: int, chat: bool) -> dict[str, Any]:
    text = "".join(f" t{i}" for i in range(tokens))
    choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
    return {"id": "cal", "choices": [{**choice, "finish_reason": "length"}], "usage": _usage(tokens)}


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


async def _sleep_until(deadline: float) -> None:
    """asyncio's timers wake up to a millisecond late; sleep short of the deadline, then yield to
    the loop until it has passed (this process does nothing else, so the spinning costs nothing)."""
    delay = deadline - time.perf_counter()
    if delay > 0.002:
        await asyncio.sleep(delay - 0.002)
    while time.perf_counter() < deadline:
        await asyncio.sleep(0)


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, Any], float] | None:
    line = await reader.readline()
    if not line:
        return None
    arrived = time.perf_counter()
    method, path, _ = line.decode("latin-1").split(" ", 2)
    length = 0
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    raw = await reader.readexactly(length) if length else b""
    return method, path.split("?")[0], json.loads(raw) if raw else {}, arrived


async def serve(ttft_s: float, itl_s: float, port: int = 0, ready: Any = None, slots: int | None = None,
                errors: float = 0.0) -> None:
    app = CalibrationServer(ttft_s, itl_s, slots, errors)
    server = await asyncio.start_server(app.handle, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.calibration_server")
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.01)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=None, help="serve at most this many at once; the rest queue")
    parser.add_argument("--errors", type=float, default=0.0, help="this fraction of completions fail (HTTP 500)")
    args = parser.parse_args()
    asyncio.run(serve(args.ttft, args.itl, args.port, ready=lambda port: print(port, flush=True), slots=args.slots,
                      errors=args.errors))


if __name__ == "__main__":
    main()
