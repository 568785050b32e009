"""Air-gapped by construction: offline variables for every library, and a guard that refuses any
connection from this process to an address that is not loopback (or a host a profile names).

The guard is a Python audit hook (PEP 578) on socket events, so it sees every connection made
through Python's socket module, by any library, before a packet leaves. It cannot see sockets
opened by native code that bypasses Python; the offline variables cover the libraries known to
phone home (Hugging Face Hub, vLLM usage stats, Ray). Refused attempts are kept and logged.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
}

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class OfflineViolation(ConnectionRefusedError):
    """Raised inside the process that tried to reach a non-loopback address."""


def apply_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the offline and no-telemetry variables (children inherit them); return what was set."""
    target = os.environ if environ is None else environ
    target.update(OFFLINE_ENV)
    return dict(OFFLINE_ENV)


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%")[0]
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Refuses non-loopback socket use in this process. Install once; audit hooks cannot be removed,
    so `allowed` and `log_path` may be changed later (e.g. per cell)."""

    _installed: NetworkGuard | None = None

    def __init__(self, allowed_hosts: list[str] | None = None, log_path: Path | None = None):
        self.allowed = {h.lower() for h in allowed_hosts or []}
        self.log_path = log_path
        self.refused: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def install(cls, allowed_hosts: list[str] | None = None, log_path: Path | None = None) -> NetworkGuard:
        if cls._installed is None:
            guard = cls(allowed_hosts, log_path)
            sys.addaudithook(guard._hook)
            cls._installed = guard
        else:
            cls._installed.allowed = {h.lower() for h in allowed_hosts or []}
            cls._installed.log_path = log_path
        return cls._installed

    def permitted(self, host: Any) -> bool:
        if host is None or host == "":
            return True  # passive lookups (bind to any) send nothing
        if _is_loopback(host):
            return True
        name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
        return name.lower().strip("[]") in self.allowed

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not event.startswith("socket."):
            return
        host = None
        if event in ("socket.connect", "socket.sendto"):
            address = args[1]
            if not isinstance(address, tuple):
                return  # AF_UNIX paths and the like stay on this machine
            host = address[0]
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            host = args[0]
        else:
            return
        if self.permitted(host):
            return
        self._refuse(event, host, args)

    def _refuse(self, event: str, host: Any, args: tuple[Any, ...]) -> None:
        entry = {
            "time": time.time(),
            "event": event,
            "host": host.decode(errors="replace") if isinstance(host, bytes) else str(host),
            "port": _port(event, args),
            "pid": os.getpid(),
        }
        with self._lock:
            self.refused.append(entry)
            if self.log_path is not None:
                try:
                    with open(self.log_path, "a", encoding="utf-8") as log:
                        log.write(json.dumps(entry) + "\n")
                except OSError:
                    pass
        raise OfflineViolation(
            f"lokaal-bench refused a network connection to {entry['host']} (offline run; "
            f"only loopback and the profile's run.allow_hosts may be reached)"
        )


def _port(event: str, args: tuple[Any, ...]) -> Any:
    if event in ("socket.connect", "socket.sendto") and isinstance(args[1], tuple) and len(args[1]) > 1:
        return args[1][1]
    if event == "socket.getaddrinfo" and len(args) > 1:
        return args[1]
    return None


def read_refusals(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


__all__ = ["OFFLINE_ENV", "NetworkGuard", "OfflineViolation", "apply_offline_env", "read_refusals", "socket"]
