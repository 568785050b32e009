"""Bad input, tried for real: broken model directories, corrupt or future result sets, an occupied
output directory. Each gets a clear message and the right exit code, and nothing on disk is lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_profile


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


def fake_result_set(root: Path, manifest: object | str) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return root


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ('{"schema_version": 1, "cells": [', "corrupt JSON"),
        ({"cells": []}, "no schema_version"),
        ({"schema_version": 99, "cells": []}, "schema_version 99 is newer than this lokaal-bench understands"),
    ],
)
def test_resume_and_rerun_refuse_broken_result_sets(write_profile, tmp_path: Path, manifest, words: str) -> None:
    result = fake_result_set(tmp_path / "result", manifest)
    before = (result / "manifest.json").read_bytes()
    profile = write_profile(tiny_profile())
    for args in (("run", str(profile), "--resume", str(result)), ("rerun", str(result))):
        done = cli(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
    assert (result / "manifest.json").read_bytes() == before  # untouched


def test_an_occupied_output_directory_is_never_overwritten(write_profile, tmp_path: Path) -> None:
    result = fake_result_set(tmp_path / "result", {"schema_version": 1, "cells": []})
    done = cli("run", str(write_profile(tiny_profile())), "--output", str(result))
    assert done.returncode == 2 and "already holds a result set" in done.stderr
    assert json.loads((result / "manifest.json").read_text()) == {"schema_version": 1, "cells": []}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("break_it", "words"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json"),
        (lambda d: [p.rename(p.with_suffix(".bin")) for p in d.glob("*.safetensors")], "pickle"),
        (lambda d: [p.write_bytes(p.read_bytes()[:100]) for p in d.glob("*.safetensors")], "safetensors"),
    ],
)
def test_broken_model_directories_fail_their_cells_with_the_reason(write_profile, tmp_path: Path, break_it,
                                                                    words: str) -> None:
    from bench.models import resolve_model

    source = resolve_model(card="tiny-llama", path=None, dtype="float32", seed=0, cache_dir=None).path
    model = tmp_path / "broken-model"
    shutil.copytree(source, model)
    (model / "lokaal-bench-synthetic.json").unlink()
    break_it(model)
    profile = write_profile(tiny_profile(models=[{"path": str(model)}], run={"repetitions": 1, "warmup": 0}))
    out = tmp_path / "result"
    done = cli("run", str(profile), "--output", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (cell,) = manifest["cells"]
    assert cell["status"] == "FAILED" and "model could not be prepared" in cell["reason"]
    assert words in cell["reason"], cell["reason"]
    assert "Traceback" not in done.stdout + done.stderr
