"""Shards: a deterministic share of a profile's cells, so N machines run one profile between them.

Shard I of N (0 <= I < N, the index Slurm's array tasks and Kubernetes' Indexed Jobs count from) takes
the cells whose place among all the profile's cells, sorted by their stable id, is I modulo N. The same
profile therefore gives the same shards on every machine, every night, whatever order its cells are
listed in; the shards' sizes differ by at most one cell; and together they hold every cell once.
`auto/N` takes I from the scheduler: JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's pod) or
SLURM_ARRAY_TASK_ID (a Slurm array task).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bench.errors import BenchError

# Where a scheduler puts a task's index, in the order they are looked for.
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")


class HasId(Protocol):
    @property
    def id(self) -> str: ...


CellT = TypeVar("CellT", bound=HasId)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """`shard-1-of-4`: how the shard's result set is named."""
        return f"shard-{self.index}-of-{self.count}"

    def select(self, cells: Sequence[CellT]) -> list[CellT]:
        """This shard's cells, in the profile's order."""
        mine = set(assignment([c.id for c in cells], self.count)[self.index])
        return [c for c in cells if c.id in mine]

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def assignment(cell_ids: Sequence[str], count: int) -> list[list[str]]:
    """Every shard's cell ids: sorted by id, dealt round-robin."""
    shards: list[list[str]] = [[] for _ in range(count)]
    for position, cell_id in enumerate(sorted(set(cell_ids))):
        shards[position % count].append(cell_id)
    return shards


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """`I/N` or `auto/N` (the index from the scheduler's environment); bad input is a BenchError."""
    environ = os.environ if environ is None else environ
    match = re.fullmatch(r"\s*(auto|\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise BenchError(f"--shard {text!r}: give I/N (0 <= I < N), e.g. 0/4, or auto/N")
    count = int(match.group(2))
    if count < 1:
        raise BenchError(f"--shard {text!r}: N must be at least 1")
    if match.group(1) == "auto":
        found = next(((name, environ[name]) for name in INDEX_VARIABLES if environ.get(name, "").strip()), None)
        if found is None:
            raise BenchError(f"--shard {text!r}: auto takes the index from {' or '.join(INDEX_VARIABLES)}, "
                             "and neither is set (give the index: I/N)")
        name, value = found
        if not value.strip().isdigit():
            raise BenchError(f"--shard {text!r}: {name}={value!r} is not an index")
        index = int(value)
    else:
        index = int(match.group(1))
    if not 0 <= index < count:
        raise BenchError(f"--shard {text!r}: the index must be from 0 to {count - 1}")
    return Shard(index, count)
