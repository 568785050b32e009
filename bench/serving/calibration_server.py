"""A built-in OpenAI-compatible streaming endpoint that does no model work: it answers each
completion with a configured time to first token and inter-token latency, on loopback. Measuring
it tells how far the client's own timing can be trusted, and how much load it can generate.

    python -m bench.serving.calibration_server --ttft 0.05 --itl 0.01   # prints its port, serves until killed

Chunks are scheduled at absolute times from the request's arrival (first at +TTFT, then every ITL),
so the server's own delays do not accumulate; the response is chunked SSE like vLLM's.

What it can also do, each a switch, so the client's handling of it is tested against what it was told:
- `--reasoning N`: the first N tokens of every answer are reasoning, sent as vLLM's reasoning parsers send
  them (`--reasoning-format reasoning`, the default), as `reasoning_content`, or inside <think>...</think>
  in the answer's text (`tags`); the first answer token then comes at TTFT + N x ITL;
- structured answers: a request with a JSON schema (`response_format`) is answered with a JSON value that
  satisfies it, one token per few characters, and a request with `tools` with a call of the first tool
  whose arguments satisfy its parameters; `--invalid-structured F` cuts that fraction short (invalid);
- `GET /metrics`: Prometheus text in vLLM's names (requests running and waiting, prompt and generation
  tokens, and, with `--prefix-cache`, a cache that never evicts: queries and hits by prompt token (chat
  prompts by word), the longest prefix any earlier prompt shares).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from bench.serving.schema_instance import instance

CHARS_PER_TOKEN = 4  # a structured answer's JSON text goes out this many characters per token


@dataclass(frozen=True)
class Behaviour:
    """The switches beyond timing (see the module's docstring)."""

    reasoning: int = 0
    reasoning_format: str = "reasoning"  # reasoning | reasoning_content | tags
    invalid_structured: float = 0.0
    prefix_cache: bool = False
    metrics: bool = True  # GET /metrics answers (else 404, as a server without it)


class PrefixCache:
    """A cache that never evicts, by token: a prompt's hit is the longest prefix an earlier prompt had."""

    def __init__(self) -> None:
        self.prefixes: set[bytes] = set()

    def lookup_and_add(self, tokens: list[str]) -> int:
        digest = hashlib.sha256()
        hit, keys = 0, []
        for k, token in enumerate(tokens, start=1):
            digest.update(token.encode() + b"\x00")
            key = digest.copy().digest()
            keys.append(key)
            if key in self.prefixes and hit == k - 1:
                hit = k
        self.prefixes.update(keys)
        return hit


class CalibrationServer:
    def __init__(self, ttft_s: float, itl_s: float, slots: int | None = None, errors: float = 0.0,
                 behaviour: Behaviour | None = None):
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.behaviour = behaviour or Behaviour()
        self.requests = 0
        self.structured_answers = 0
        self.counters = {"running": 0, "waiting": 0, "prompt_tokens": 0, "generation_tokens": 0,
                         "prefix_queries": 0, "prefix_hits": 0, "success": 0}
        self.cache = PrefixCache()
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
        if method == "GET" and path == "/metrics" and self.behaviour.metrics:
            await _send_text(writer, 200, self.metrics_text())
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
        self.counters["waiting"] += 1
        if self.slots is not None:
            async with self.slots:
                self.counters["waiting"] -= 1
                await self._complete(writer, body, path, time.perf_counter())
            return
        self.counters["waiting"] -= 1
        await self._complete(writer, body, path, arrived)

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's tokens (chat: its words), counted, and looked up in the prefix cache."""
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            tokens = [str(t) for t in prompt]
        elif isinstance(prompt, str):
            tokens = prompt.split()
        else:
            tokens = " ".join(str(m.get("content", "")) for m in body.get("messages") or []
                              if isinstance(m, dict)).split()
        self.counters["prompt_tokens"] += len(tokens)
        self.counters["prefix_queries"] += len(tokens)
        if self.behaviour.prefix_cache:
            self.counters["prefix_hits"] += self.cache.lookup_and_add(tokens)
        return len(tokens)

    def _pieces(self, body: dict[str, Any], chat: bool, tokens: int) -> list[dict[str, Any]]:
        """The chunks' choices: reasoning first, then the answer (a structured one, or ' t0 t1 ...')."""
        structured = _structured_text(body) if chat else None
        if structured is not None:
            self.structured_answers += 1
            n = self.structured_answers
            invalid = self.behaviour.invalid_structured
            kind, name, text = structured
            if int(n * invalid) != int((n - 1) * invalid):
                text = text[:-1]  # cut short: no longer JSON
            parts = [text[i:i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)][:tokens]
            if kind == "tools":
                return [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "id": "call0", "type": "function",
                     "function": {**({"name": name} if k == 0 else {}), "arguments": part}}]}}
                    for k, part in enumerate(parts)]
            return [{"index": 0, "delta": {"content": part}} for part in parts]
        thinking = min(self.behaviour.reasoning, tokens)
        choices = []
        for index in range(tokens):
            if index < thinking:
                choices.append(self._reasoning(index, thinking, chat))
            elif chat:
                choices.append({"index": 0, "delta": {"content": f" t{index}"}})
            else:
                choices.append({"index": 0, "text": f" t{index}"})
        return choices

    def _reasoning(self, index: int, thinking: int, chat: bool) -> dict[str, Any]:
        form = self.behaviour.reasoning_format
        if form == "tags" or not chat:  # the completions route has no reasoning field: tags in the text
            text = "<think>" if index == 0 else "</think>" if index == thinking - 1 else f" r{index}"
            return {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
        return {"index": 0, "delta": {form: f" r{index}"}}

    async def _complete(self, writer: asyncio.StreamWriter, body: dict[str, Any], path: str, arrived: float) -> None:
        tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        chat = path.endswith("chat/completions")
        prompt_tokens = self._prompt_tokens(body)
        self.counters["running"] += 1
        try:
            if not body.get("stream"):
                await _sleep_until(arrived + self.ttft_s + self.itl_s * (tokens - 1))
                await _send_json(writer, 200, _final(tokens, chat, prompt_tokens))
                self.counters["generation_tokens"] += tokens
                return
            choices = self._pieces(body, chat, tokens)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for index, choice in enumerate(choices):
                await _sleep_until(arrived + self.ttft_s + self.itl_s * index)
                _write_chunk(writer, _event(_chunk(choice, chat)))
                await writer.drain()
                self.counters["generation_tokens"] += 1
            if (body.get("stream_options") or {}).get("include_usage"):
                _write_chunk(writer, _event({"choices": [], "usage": _usage(len(choices), prompt_tokens)}))
            _write_chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.counters["success"] += 1
        finally:
            self.counters["running"] -= 1

    def metrics_text(self) -> str:
        """Prometheus text exposition, in vLLM's metric names (so the same scraper reads both)."""
        c = self.counters
        lines = []
        for name, kind, value in (
                ("vllm:num_requests_running", "gauge", c["running"]),
                ("vllm:num_requests_waiting", "gauge", c["waiting"]),
                ("vllm:prompt_tokens_total", "counter", c["prompt_tokens"]),
                ("vllm:generation_tokens_total", "counter", c["generation_tokens"]),
                ("vllm:prefix_cache_queries_total", "counter", c["prefix_queries"]),
                ("vllm:prefix_cache_hits_total", "counter", c["prefix_hits"]),
                ("vllm:request_success_total", "counter", c["success"])):
            lines += [f"# TYPE {name} {kind}", f'{name}{{model_name="calibration"}} {float(value)}']
        return "\n".join(lines) + "\n"


def _structured_text(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(kind, tool name, the answer's JSON text) for a request that asks for a structured answer."""
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        function = (tools[0] or {}).get("function") or {}
        return "tools", str(function.get("name", "")), json.dumps(instance(function.get("parameters") or {}))
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return "json_schema", "", json.dumps(instance(schema))
    if response_format.get("type") == "json_object":
        return "json_object", "", json.dumps({"answer": "t"})
    return None


def _chunk(choice: dict[str, Any], chat: bool) -> dict[str, Any]:
    return {"id": "cal", "object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}


def _usage(tokens: int, prompt_tokens: int = 0) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}


def _final(tokens: int, chat: bool, prompt_tokens: int = 0) -> dict[str, Any]:
    text = "".join(f" t{i}" for i in range(tokens))
    choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
    return {"id": "cal", "choices": [{**choice, "finish_reason": "length"}], "usage": _usage(tokens, prompt_tokens)}


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


async def _send_text(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = text.encode()
    writer.write(f"HTTP/1.1 {status} OK\r\ncontent-type: text/plain; version=0.0.4\r\n"
                 f"content-length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()


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
                errors: float = 0.0, behaviour: Behaviour | None = None) -> None:
    app = CalibrationServer(ttft_s, itl_s, slots, errors, behaviour)
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
    parser.add_argument("--reasoning", type=int, default=0, help="the first N tokens of every answer are reasoning")
    parser.add_argument("--reasoning-format", choices=["reasoning", "reasoning_content", "tags"], default="reasoning")
    parser.add_argument("--invalid-structured", type=float, default=0.0,
                        help="this fraction of structured answers is cut short (not valid JSON)")
    parser.add_argument("--prefix-cache", action="store_true", help="count prefix-cache hits (a cache that never "
                                                                    "evicts) in /metrics")
    parser.add_argument("--no-metrics", action="store_true", help="no /metrics route (HTTP 404)")
    args = parser.parse_args()
    behaviour = Behaviour(args.reasoning, args.reasoning_format, args.invalid_structured, args.prefix_cache,
                          not args.no_metrics)
    asyncio.run(serve(args.ttft, args.itl, args.port, ready=lambda port: print(port, flush=True), slots=args.slots,
                      errors=args.errors, behaviour=behaviour))


if __name__ == "__main__":
    main()
