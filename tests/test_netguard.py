"""The air-gap guard, exercised in fresh processes (an audit hook cannot be removed again).

Every refused address is TEST-NET (RFC 5737) and the test runs inside a network namespace with
only loopback when `unshare` allows it, so even a broken guard sends nothing off this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.netguard import NetworkGuard
from conftest import loopback_only

SCRIPT = r"""
import json, socket, sys, threading, http.server
from bench.netguard import NetworkGuard, OfflineViolation
guard = NetworkGuard.install([], None)
results = {}
for host in ("192.0.2.1", "example.invalid"):
    try:
        socket.create_connection((host, 80), timeout=1)
        results[host] = "connected"
    except OfflineViolation as exc:
        results[host] = "refused: " + str(exc)
    except OSError as exc:
        results[host] = "other: " + repr(exc)
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.handle_request, daemon=True).start()
conn = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
results["loopback"] = conn.recv(12).decode()
results["refused_log"] = [e["host"] for e in guard.refused]
print(json.dumps(results))
"""


def test_guard_refuses_non_loopback_and_allows_loopback() -> None:
    done = subprocess.run([*loopback_only(), sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["192.0.2.1"].startswith("refused: lokaal-bench refused")
    assert results["example.invalid"].startswith("refused")
    assert results["loopback"].startswith("HTTP/1.0")
    assert results["refused_log"] == ["192.0.2.1", "example.invalid"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), (None, True),
     ("10.0.0.1", False), ("192.0.2.1", False), ("example.org", False), ("endpoint.lan", True)],
)
def test_permitted_hosts(host, allowed) -> None:
    assert NetworkGuard(["endpoint.lan"]).permitted(host) is allowed
