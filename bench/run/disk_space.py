"""Disk space: refuse a run that clearly cannot fit, and stop cleanly when the disk fills anyway.

Before a run: the plan's writes are estimated (synthetic weights not yet in the model cache, and a
floor per cell and per request in the result set) and compared with the free space of each
filesystem they go to; a plan that clearly does not fit is refused (exit 2) before anything starts.

During a run: the result set holds a small reserve file. When a write fails because the disk is
full (ENOSPC, or EDQUOT for a quota), the runner frees the reserve, so the manifest can still be
written and sealed as `interrupted` with the reason, and stops with DiskFullError: one line saying
the disk is full, where, and how to resume; exit code 130, that of an interrupted run (completed
cells are kept; `--resume` redoes the rest).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

RESERVE_NAME = ".lokaal-bench-reserve"
RESERVE_BYTES = 4 * 2**20  # room for the last manifest and its seal once the disk is full
CELL_FLOOR_BYTES = 32 * 1024  # spec, summary, log, telemetry of the smallest cell seen
REQUEST_FLOOR_BYTES = 64  # one record, gzip-compressed, without token times
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(BenchError):
    """The disk filled during a run. Exit code 130, as an interrupted run: resume completes it."""

    exit_code = 130

    def __init__(self, where: Path, result_set: Path, resume_command: str):
        self.where, self.result_set = where, result_set
        super().__init__(f"the disk is full at {where} ({_filesystem_of(where)}); "
                         f"the completed cells are kept in {result_set}. Free some space, then resume with: "
                         f"{resume_command}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def says_disk_full(reason: str | None) -> bool:
    """A cell's failure reason that is the disk filling up in the cell process."""
    text = reason or ""
    return any(words in text for words in ("[Errno 28]", "No space left on device", "[Errno 122]",
                                           "Disk quota exceeded"))


def where_it_failed(exc: BaseException, fallback: Path) -> Path:
    name = getattr(exc, "filename", None)
    return Path(name).parent if name else fallback


# --- the reserve ----------------------------------------------------------------------------------


def make_reserve(directory: Path) -> None:
    """A file of RESERVE_BYTES in the result set, given back when the disk fills (best effort)."""
    path = directory / RESERVE_NAME
    with contextlib.suppress(OSError):
        if path.exists() and path.stat().st_size >= RESERVE_BYTES:
            return
        with open(path, "wb") as out:
            try:
                os.posix_fallocate(out.fileno(), 0, RESERVE_BYTES)
            except (AttributeError, OSError):
                out.write(b"\0" * RESERVE_BYTES)
            out.flush()
            os.fsync(out.fileno())


def free_reserve(directory: Path) -> None:
    with contextlib.suppress(OSError):
        (directory / RESERVE_NAME).unlink()


# --- the estimate before a run ----------------------------------------------------------------------


@dataclass
class Need:
    directory: Path
    bytes: int
    what: str


def estimate(cells: list[Any], result_dir: Path) -> list[Need]:
    """What the cells will write: weights to materialise (per model cache) and the result set's floor."""
    from bench.models import default_cache_dir, load_card
    from bench.models.materialise import _is_complete, cache_entry_name
    from bench.profile.engine_specs import runs_gguf

    needs = [Need(result_dir, RESERVE_BYTES + 64 * 1024 + sum(_cell_floor(c) for c in cells),
                  f"the result set of {len(cells)} cell(s)")]
    seen: set[tuple[str, str, int, str]] = set()
    for cell in cells:
        card_name = cell.model.card
        if not card_name or cell.engine.weights_source == "dummy":
            continue  # dummy weights: vLLM makes them in memory; the cache gets config and tokenizer only
        dtype = cell.engine.weights_dtype
        seed = cell.model.seed
        cache = Path(cell.run.model_cache_dir).expanduser() if cell.run.model_cache_dir else default_cache_dir()
        key = (card_name, dtype, seed, str(cache))
        if key in seen:
            continue
        seen.add(key)
        try:
            card = load_card(card_name)
            gguf, quantization = runs_gguf(cell.engine)
            if gguf:  # llama.cpp: an F16 GGUF, and the quantised one made from it (bench/models/gguf.py)
                from bench.models.gguf import gguf_files_missing

                missing = gguf_files_missing(card, quantization or "F16", seed, cache)
                if missing:
                    needs.append(Need(cache, missing, f"GGUF of {card_name} ({quantization or 'F16'})"))
                continue
            if _is_complete(cache / cache_entry_name(card, dtype, seed), card, dtype, seed):
                continue
            needs.append(Need(cache, card.weight_bytes(dtype), f"synthetic weights of {card_name} ({dtype})"))
        except (ValueError, KeyError, OSError):
            continue  # the model's own problem: its cells report it
    return needs


def _cell_floor(cell: Any) -> int:
    requests = getattr(cell.scenario, "requests", None) or 100
    repetitions = cell.run.repetitions if isinstance(cell.run.repetitions, int) else cell.run.max_repetitions
    return CELL_FLOOR_BYTES + REQUEST_FLOOR_BYTES * requests * repetitions


def check_space(needs: list[Need]) -> None:
    """BenchError (exit 2) when a filesystem clearly lacks the space the plan will write to it."""
    by_device: dict[int, list[Need]] = {}
    anchors: dict[int, Path] = {}
    for need in needs:
        existing = _existing(need.directory)
        device = existing.stat().st_dev
        by_device.setdefault(device, []).append(need)
        anchors.setdefault(device, existing)
    for device, items in by_device.items():
        total = sum(n.bytes for n in items)
        free = shutil.disk_usage(anchors[device]).free
        if free < total:
            parts = ", ".join(f"{n.what} {_size(n.bytes)} in {n.directory}" for n in items)
            where = anchors[device]
            raise BenchError(f"not enough disk space for this run: {where} ({_filesystem_of(where)})"
                             f" has {_size(free)} free, the plan writes at least {_size(total)} ({parts}); free "
                             f"space, or choose --results-dir or run.model_cache_dir on another disk")


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _filesystem_of(path: Path) -> str:
    """The mount point of the filesystem holding `path`, as the user would look for it (df)."""
    current = _existing(path)
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return f"filesystem mounted at {current}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
