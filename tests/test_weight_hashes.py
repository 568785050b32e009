"""Weight files are hashed once and the hash reused while their size and mtime hold."""

from __future__ import annotations

import os
from pathlib import Path

from bench.results.integrity import model_weight_hashes, sha256_file
from bench.results.weight_hashes import cached_sha256


def test_a_weight_file_is_hashed_once_until_it_changes(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache" / "weight-hashes.json"
    hashed: list[Path] = []

    def digest(path: Path) -> str:
        hashed.append(path)
        return sha256_file(path)

    first = cached_sha256([weights], digest, cache)
    assert first == {"model.safetensors": sha256_file(weights)} and len(hashed) == 1
    assert cached_sha256([weights], digest, cache) == first and len(hashed) == 1  # reused
    weights.write_bytes(b"b" * 4096)  # same size, new contents and mtime
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = cached_sha256([weights], digest, cache)
    assert len(hashed) == 2 and second["model.safetensors"] == sha256_file(weights) != first["model.safetensors"]


def test_a_model_directory_without_a_marker_uses_the_cache(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.safetensors").write_bytes(b"x" * 100)
    monkeypatch.setenv("LOKAAL_BENCH_CACHE", str(tmp_path / "cache"))
    assert model_weight_hashes(model) == {"w.safetensors": sha256_file(model / "w.safetensors")}
    assert (tmp_path / "cache" / "weight-hashes.json").is_file()
