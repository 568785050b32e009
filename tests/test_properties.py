"""Property-based tests (Hypothesis), bounded and repeatable on any machine: no deadline, a fixed
number of examples, derandomised. Three doors a hostile input comes through:

- the profile loader: any bytes, invalid UTF-8, any YAML tree (anchors, aliases, cycles, odd keys)
  give a profile or exit 2 with a message naming the file, through the command line's own entry;
- the client's reading of a server's reply: any bytes a server sends give a request result (a failed
  request with its reason, or a whole reply), never an exception, and a record the metrics read;
- the result-set readers: any corruption of a copied result set gives an answer or a clear error
  (exit 2 or a failed verification), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import cli
from bench.measure.metrics import headline_metrics
from bench.measure.sizing import exact_plan
from bench.profile.workloads import Request
from bench.scenarios.common import ScenarioContext
from bench.scenarios.served import _record
from bench.serving.client import Connection


def bounded(examples: int) -> settings:
    """The same examples on every machine and run, however long each takes."""
    return settings(deadline=None, max_examples=examples, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

DATA = Path(__file__).parent / "data"


# --- the profile loader -----------------------------------------------------------------------------

PROFILE_KEYS = ["name", "models", "engines", "workloads", "scenarios", "run", "card", "path", "kind", "dtype",
                "input_tokens", "output_tokens", "dist", "value", "min", "max", "prompts_file", "file",
                "requests", "users", "rates", "base_urls", "server", "command", "memory_limit_gib", "slo"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["tiny-llama", "transformers", "openai", "single-stream",
                                                           "fixed", "bf16", "http://127.0.0.1:1/v1", "concurrency"]))
keys = st.one_of(st.sampled_from(PROFILE_KEYS), st.text(max_size=6), st.integers(-3, 3), st.booleans(),
                 st.floats(allow_nan=False, allow_infinity=False), st.none())
trees = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(keys, children, max_size=5), max_leaves=25)


def with_aliases(tree: Any, share: int) -> Any:
    """The tree with one of its containers repeated (YAML then writes an anchor and an alias), or, when
    `share` is odd, made to hold itself (a cycle)."""
    containers = [tree] if isinstance(tree, (dict, list)) else []
    stack = list(containers)
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                containers.append(child)
                stack.append(child)
    if not containers:
        return tree
    target = containers[share % len(containers)]
    repeated = target if share % 2 else containers[(share // 2) % len(containers)]
    if isinstance(target, dict):
        target["models"] = repeated
    else:
        target.append(repeated)
    return tree


def profile_texts() -> st.SearchStrategy[bytes]:
    dumped = st.builds(lambda tree, share: yaml.safe_dump(with_aliases(tree, share), allow_unicode=True).encode(),
                       trees, st.integers(0, 50))
    profile_like = st.builds(lambda extra: yaml.safe_dump({"name": "p", "models": [{"card": "tiny-llama"}],
                                                           "engines": [{"kind": "transformers"}],
                                                           "scenarios": [{"kind": "single-stream"}], **extra}).encode(),
                             st.dictionaries(st.sampled_from(PROFILE_KEYS), trees, max_size=3))
    damaged = st.builds(lambda text, at, junk: text[:at] + junk + text[at:], dumped, st.integers(0, 200),
                        st.binary(min_size=1, max_size=4))
    return st.one_of(st.binary(max_size=200), dumped, profile_like, damaged,
                     st.text(max_size=100).map(lambda t: t.encode("utf-8")),
                     st.sampled_from([b"a: &x [*x]", b"a: &a {b: *a}", b"name: caf\xe9\n", b"\xef\xbb\xbfname: p",
                                      b"a: !!python/object:os.system x", b"a: !!timestamp 2020-13-45", b"[" * 2000,
                                      b"a: !!binary '@@@'", b"? [a, b]\n: c", b"a: *undefined", b"\x00\x01"]))


@bounded(120)
@given(raw=profile_texts())
def test_any_profile_bytes_give_a_profile_or_exit_2_naming_the_file(raw: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "profile.yaml"
    path.write_bytes(raw)
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 2), (raw, out, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[0].startswith(f"error: {path}")
        assert all(str(path) in line for line in lines), err
        assert "Traceback" not in err


# --- the client's reading of a reply -----------------------------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=8)),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(
                               st.sampled_from(["choices", "usage", "text", "token_ids", "delta", "content",
                                                "completion_tokens", "finish_reason", "error", "message", "x"]),
                               c, max_size=4), max_leaves=15)


def chunked(events: list[bytes], cut: int | None) -> bytes:
    body = b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events) + b"0\r\n\r\n"
    return HEAD + (body if cut is None else body[:cut])


def replies() -> st.SearchStrategy[bytes]:
    events = st.lists(st.one_of(json_values.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
                                st.just(b"data: [DONE]\n\n"), st.binary(max_size=40)), max_size=6)
    streams = st.builds(chunked, events, st.none() | st.integers(0, 400))
    headed = st.builds(lambda head, tail: head + tail,
                       st.sampled_from([HEAD, b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
                                        b"HTTP/1.1 429 Too Many\r\nretry-after: 1\r\n"
                                        b"transfer-encoding: chunked\r\n\r\n",
                                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
                                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"]),
                       st.binary(max_size=200))
    return st.one_of(st.binary(max_size=300), streams, headed)


@pytest.fixture(scope="module")
def reply_server():
    """A real server on loopback, in a thread: each connection is answered with the bytes queued for it."""
    import threading

    loop = asyncio.new_event_loop()
    queued: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(queued.pop(0))
            await writer.drain()
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1], queued
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def context() -> ScenarioContext:
    return ScenarioContext(engine=None, scenario={"kind": "concurrency"}, workload=None,  # type: ignore[arg-type]
                           plan=exact_plan(1), t0=0.0, progress=lambda *a: None)


@bounded(150)
@given(raw=replies())
def test_any_reply_bytes_give_a_request_result_never_an_exception(raw: bytes, reply_server) -> None:
    port, queued = reply_server
    queued.append(raw)

    async def one() -> Any:
        connection = Connection("127.0.0.1", port)
        try:
            return await connection.stream("/v1/completions", {"prompt": [1]}, timeout_s=10)
        finally:
            await connection.close()

    result = asyncio.run(one())
    assert result.error is None or (isinstance(result.error, str) and result.error), raw
    if result.error is None:
        assert result.done or result.status == 200
    record = _record(context(), Request(0, [1, 2], 4), result, 0, result.sent, "x", 0)
    assert record.ok == (record.error is None)
    headline_metrics([record])  # the cell's metrics read whatever came back
    json.dumps(record.to_json())


# --- the result-set readers ---------------------------------------------------------------------------

SOURCE = DATA / "nightly-2"
FILES = sorted(p.relative_to(SOURCE).as_posix() for p in SOURCE.rglob("*") if p.is_file())


def corrupt(root: Path, name: str, how: str, where: int, junk: bytes) -> None:
    path = root / name
    raw = path.read_bytes()
    at = where % (len(raw) + 1)
    if name.endswith(".gz") and how in ("json", "flip"):  # inside the compression, where readers parse
        raw = gzip.decompress(raw)
        at = where % (len(raw) + 1)
    if how == "truncate":
        changed = raw[:at]
    elif how == "flip":
        changed = raw[:at] + bytes([(raw[at] if at < len(raw) else 0) ^ (1 + where % 255)]) + raw[at + 1:]
    elif how == "insert":
        changed = raw[:at] + junk + raw[at:]
    elif how == "delete":
        path.unlink()
        return
    else:  # json: one value replaced by another of a different kind
        try:
            document = json.loads(raw.decode().splitlines()[0] if name.endswith(".gz") else raw)
        except (ValueError, UnicodeDecodeError, IndexError):
            document = None
        changed = json.dumps(_replace_one(document, where, junk)).encode()
    if name.endswith(".gz") and how in ("json", "flip"):
        changed = gzip.compress(changed)
    path.write_bytes(changed)


def _replace_one(document: Any, where: int, junk: bytes) -> Any:
    rng = random.Random(where)
    replacement = rng.choice([None, 0, -1, "x", [], {}, [1, "a"], {"a": 1}, 1e308, junk.hex(), True])
    if not isinstance(document, (dict, list)):
        return replacement
    node: Any = document
    for _ in range(rng.randint(0, 5)):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = rng.choice(keys)
        if isinstance(node[key], (dict, list)) and rng.random() < 0.7:
            node = node[key]
            continue
        node[key] = replacement
        return document
    if isinstance(node, dict):
        node[rng.choice(list(node) or ["x"])] = replacement
    elif node:
        node[0] = replacement
    return document


@bounded(80)
@given(name=st.sampled_from(FILES), how=st.sampled_from(["truncate", "flip", "insert", "delete", "json"]),
       where=st.integers(0, 10**6), junk=st.binary(min_size=1, max_size=8))
def test_any_corruption_of_a_result_set_gives_an_answer_or_a_clear_error(name: str, how: str, where: int,
                                                                          junk: bytes, tmp_path: Path,
                                                                          capsys) -> None:
    root = tmp_path / "copy"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(SOURCE, root)
    corrupt(root, name, how, where, junk)
    # (compare reads through the same doors as history and load, at ten times their cost per example)
    for argv in (["verify", str(root)], ["table", str(root), "--format", "json"],
                 ["history", str(DATA / "nightly-1"), str(root)]):
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code in (0, 1, 2), (argv, out, err)
        assert "Traceback" not in err
        if code == 2:
            assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    try:
        import bench

        bench.load(root, per="request")
    except Exception as exc:  # the one door researchers use: a clear error, of the kind the CLI shows
        from bench.errors import BenchError

        assert isinstance(exc, BenchError), repr(exc)
