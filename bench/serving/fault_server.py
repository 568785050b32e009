"""A misbehaving OpenAI-compatible endpoint, for testing that every fault a server can commit becomes
a counted, explained failed request (or, for honest multi-token chunks, a correct count), never a
failed cell. A real process on loopback, like the calibration endpoint beside it:

    python -m bench.serving.fault_server [--port P] [--gate FILE] [--log-headers]   # prints its port

The fault is chosen per request by the first segment of the path, so one server serves them all:
a profile's base_url `http://127.0.0.1:P/<fault>/v1` gets that fault on every completion,
`http://127.0.0.1:P/half/<fault>/v1` on every other one (the first, third...; the rest are
answered correctly), `http://127.0.0.1:P/v1` on none. The switches (FAULTS):

    ok                  a correct stream: one token per chunk, usage at the end
    never-answer        reads the request, never answers
    stall               streams two tokens, then nothing more
    garbage-status      a status line that is not HTTP
    non-object          SSE events whose data is JSON but not an object ([1, 2], "text", 42)
    invalid-utf8        an event whose bytes are not UTF-8
    early-close         streams two tokens, then closes the connection mid-reply
    huge-chunk          announces one HTTP chunk of 1 GiB
    huge-event          one SSE event of 2 MiB (in ordinary chunks)
    k-tokens-K          K tokens per chunk (text only), usage correct
    k-tokens-ids-K      K tokens per chunk with their token ids (vLLM's return_token_ids), usage correct
    http-N              HTTP N (401, 429, 500, 503, ...) with an OpenAI error body
    http-N-retry        the same with `Retry-After: 2`
    echo-headers        HTTP 401 whose body echoes the request's headers (an Authorization among them)
    hung-models         completions are fine; GET .../models never answers
    gated               answers once the file given by --gate exists (a test holds a run measuring)

GET /health answers 200 (so it can run as a managed `command` server); with --log-headers every
request's headers are printed to stdout (a server log that would hold an API key); with --api-key
KEY a completion without `Authorization: Bearer KEY` is answered HTTP 401.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FAULTS = ("ok", "never-answer", "stall", "garbage-status", "non-object", "invalid-utf8", "early-close",
          "huge-chunk", "huge-event", "k-tokens-K", "k-tokens-ids-K", "http-N", "http-N-retry", "echo-headers",
          "hung-models", "gated")
_FAULT = re.compile(r"^/(half/)?([a-z0-9-]+)(/v1/.*)$")
STALL_S = 3600.0


class FaultServer:
    def __init__(self, ttft_s: float = 0.005, itl_s: float = 0.005, gate: Path | None = None,
                 log_headers: bool = False, api_key: str | None = None):
        self.ttft_s, self.itl_s, self.gate, self.log_headers = ttft_s, itl_s, gate, log_headers
        self.api_key = api_key
        self.counts: dict[str, int] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, headers, body = request
                if self.log_headers:
                    print(f"{method} {path} {json.dumps(headers)}", flush=True)
                if not await self._respond(writer, method, path, headers, body):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str],
                       body: dict[str, Any]) -> bool:
        """Answer one request; False when the connection must close (the fault closed it)."""
        match = _FAULT.match(path)
        fault, route = (match.group(2), match.group(3)) if match else ("ok", path)
        if method == "GET" and path == "/health":
            await _send_json(writer, 200, {})
            return True
        if method == "GET" and route == "/v1/models":
            if fault == "hung-models":
                await asyncio.sleep(STALL_S)
            await _send_json(writer, 200, {"object": "list", "data": [{"id": "faults", "object": "model"}]})
            return True
        if method != "POST" or route != "/v1/completions":
            await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await _send_json(writer, 401, {"error": {"message": "a wrong or missing API key"}})
            return True
        tokens = int(body.get("max_tokens") or 16)
        if match and match.group(1):  # half: the fault on odd-numbered completions of this path only
            self.counts[path] = self.counts.get(path, 0) + 1
            if self.counts[path] % 2 == 0:
                fault = "ok"
        if fault == "gated" and self.gate is not None:
            while not self.gate.exists():
                await asyncio.sleep(0.05)
        if fault in ("ok", "gated", "hung-models"):
            await self._stream(writer, body, tokens, per_chunk=1, ids=False)
            return True
        if k := re.fullmatch(r"k-tokens-(ids-)?(\d+)", fault):
            await self._stream(writer, body, tokens, per_chunk=int(k.group(2)), ids=bool(k.group(1)))
            return True
        if status := re.fullmatch(r"http-(\d{3})(-retry)?", fault):
            extra = {"retry-after": "2"} if status.group(2) else {}
            await _send_json(writer, int(status.group(1)), {"error": {"message": f"planted HTTP {status.group(1)}",
                                                                       "type": "fault"}}, extra)
            return True
        if fault == "echo-headers":
            await _send_json(writer, 401, {"error": {"message": "unauthorised", "request_headers": headers}})
            return True
        return await self._misbehave(writer, fault)

    async def _misbehave(self, writer: asyncio.StreamWriter, fault: str) -> bool:
        if fault == "never-answer":
            await asyncio.sleep(STALL_S)
            return False
        if fault == "garbage-status":
            writer.write(b"HTTQ/1.1 two hundred\r\ncontent-type: text/event-stream\r\n\r\n")
            await writer.drain()
            return False
        if fault == "huge-chunk":
            writer.write(_STREAM_HEAD + b"40000000\r\n" + b"x" * 65536)
            await writer.drain()
            return False
        writer.write(_STREAM_HEAD)
        if fault in ("stall", "early-close"):
            for index in range(2):
                _write_chunk(writer, _event(_text_chunk([f" t{index}"])))
            await writer.drain()
            if fault == "stall":
                await asyncio.sleep(STALL_S)
            return False
        if fault == "non-object":
            for data in ([1, 2], "text", 42):
                _write_chunk(writer, b"data: " + json.dumps(data).encode() + b"\n\n")
        elif fault == "invalid-utf8":
            _write_chunk(writer, b'data: {"choices": [{"index": 0, "text": "\xff\xfe"}]}\n\n')
        elif fault == "huge-event":
            piece = b"data: {" + b" " * (2**20 - 7)
            _write_chunk(writer, piece)
            _write_chunk(writer, piece)
        else:
            _write_chunk(writer, _event({"error": {"message": f"unknown fault {fault!r}; known: {FAULTS}"}}))
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _stream(self, writer: asyncio.StreamWriter, body: dict[str, Any], tokens: int, per_chunk: int,
                      ids: bool) -> None:
        """A correct stream: `per_chunk` tokens a chunk (the last may carry fewer), usage at the end."""
        arrived = time.perf_counter()
        writer.write(_STREAM_HEAD)
        sent = 0
        for chunk in range(-(-tokens // per_chunk)):
            await _sleep_until(arrived + self.ttft_s + self.itl_s * per_chunk * chunk)
            count = min(per_chunk, tokens - sent)
            data = _text_chunk([f" t{sent + i}" for i in range(count)])
            if ids:
                data["choices"][0]["token_ids"] = [100 + sent + i for i in range(count)]
            _write_chunk(writer, _event(data))
            sent += count
            await writer.drain()
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
            _write_chunk(writer, _event({"choices": [], "usage": usage}))
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _text_chunk(pieces: list[str]) -> dict[str, Any]:
    return {"id": "fault", "object": "text_completion", "choices": [{"index": 0, "text": "".join(pieces),
                                                                     "finish_reason": None}]}


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any],
                     headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: application/json\r\n"
                 f"{extra}content-length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], dict[str, Any]] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    raw = await reader.readexactly(length) if length else b""
    return method, path.split("?")[0], headers, json.loads(raw) if raw else {}


async def serve(port: int = 0, ready: Any = None, **settings: Any) -> None:
    app = FaultServer(**settings)
    server = await asyncio.start_server(app.handle, "127.0.0.1", port, backlog=1024)
    if ready is not None:
        ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def start(*args: str) -> tuple[subprocess.Popen[str], int]:
    """The fault server as a process on loopback (tests); returns it and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.serving.fault_server", *args], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError("the fault server did not start")
    return proc, int(line)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.fault_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft", type=float, default=0.005)
    parser.add_argument("--itl", type=float, default=0.005)
    parser.add_argument("--gate", type=Path, help="the `gated` fault answers once this file exists")
    parser.add_argument("--log-headers", action="store_true", help="print every request's headers")
    parser.add_argument("--api-key", help="answer completions without this bearer token with HTTP 401")
    args = parser.parse_args()
    asyncio.run(serve(args.port, ready=lambda port: print(port, flush=True), ttft_s=args.ttft, itl_s=args.itl,
                      gate=args.gate, log_headers=args.log_headers, api_key=args.api_key))


if __name__ == "__main__":
    main()
