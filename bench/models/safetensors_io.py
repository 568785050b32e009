"""Minimal safetensors header reading and streaming writing, without torch.

The format is an 8-byte little-endian header length, a JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}) and the raw tensor bytes.
Writing it ourselves lets the materialiser stream multi-GB shards chunk by chunk instead of holding a
shard of tensors in memory, and reading headers lets us check a local model directory in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

SAFETENSORS_DTYPES: dict[str, str] = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
ELEMENT_BYTES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F4": 1,
    "C64": 8,
}
# A header larger than this is certainly not a real safetensors header (the reference reader uses 100 MB).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsFormatError(ValueError):
    """A file that is not a complete, well-formed safetensors file."""


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse the header; check that the data it describes is exactly what the file holds.

    Returns (header without "__metadata__", size of the data section). Raises SafetensorsFormatError for a
    truncated file, an impossible header length, bad JSON, or offsets that overlap, leave gaps or run past
    the end of the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsFormatError(f"{path}: file is {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise SafetensorsFormatError(
                f"{path}: header length {n} does not fit in the file ({size} bytes); truncated or not safetensors"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsFormatError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1].get("data_offsets", (0, 0)))):
        try:
            begin, stop = (int(x) for x in info["data_offsets"])
            expected = ELEMENT_BYTES.get(info["dtype"], 0) * _numel(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsFormatError(f"{path}: malformed header entry for tensor {name!r}") from None
        if begin != end or (expected and stop - begin != expected):
            raise SafetensorsFormatError(f"{path}: tensor {name!r} has inconsistent data offsets {begin}..{stop}")
        end = stop
    if end != data_size:
        raise SafetensorsFormatError(
            f"{path}: header describes {end} bytes of tensor data but the file holds {data_size}; "
            "the file is truncated or corrupt"
        )
    return header, data_size


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def write_streaming(
    path: Path,
    tensors: list[tuple[str, list[int], str]],
    chunks: Iterator[Any],
    on_bytes: Callable[[int], None] | None = None,
    fsync: bool = True,
) -> str:
    """Write a safetensors file whose tensors' bytes arrive as a stream of chunks, in `tensors` order.

    `tensors` is [(name, shape, safetensors dtype)]. Returns the sha256 of the whole file. With fsync the
    file is durable on return; callers that rename a directory into place must fsync before that.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, st_dtype in tensors:
        nbytes = ELEMENT_BYTES[st_dtype] * _numel(shape)
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the reference writer pads to 8-byte alignment
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        _write(f, digest, struct.pack("<Q", len(blob)) + blob)
        written = 0
        for chunk in chunks:
            view = memoryview(chunk).cast("B")  # byte length whatever the item type (uint16, float32)
            _write(f, digest, view)
            written += view.nbytes
            if on_bytes is not None:
                on_bytes(view.nbytes)
        if written != offset:
            raise RuntimeError(f"{path}: wrote {written} bytes of tensor data, header promised {offset}")
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def _write(f: BinaryIO, digest: Any, data: memoryview | bytes) -> None:
    digest.update(data)
    f.write(data)
