"""Tamper-evident result sets: every file's SHA-256 sealed into the manifest; Ed25519 signatures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_profile

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    profile = root / "p.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile(run={"repetitions": 1, "warmup": 0})))
    done = cli("run", str(profile), "--output", str(root / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "run"


@pytest.fixture
def result(sealed_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(sealed_run, copy)
    return copy


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_untouched_result_set_verifies(result: Path) -> None:
    manifest = json.loads((result / "manifest.json").read_text())
    files = manifest["integrity"]["files"]
    assert any(name.endswith("records.jsonl.gz") for name in files) and "manifest.json" not in files
    (weights,) = manifest["integrity"]["model_weights"].values()
    assert weights and all(len(digest) == 64 for digest in weights.values())
    done = cli("verify", str(result))
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("target", ["manifest.json", "cells/*/cell.json", "cells/*/records.jsonl.gz",
                                    "cells/*/telemetry.jsonl.gz", "cells/*/spec.json", "cells/*/cell.log"])
def test_one_changed_byte_anywhere_is_caught(result: Path, target: str) -> None:
    (path,) = result.glob(target)
    flip_one_byte(path)
    done = cli("verify", str(result))
    assert done.returncode == 1
    assert f"changed: {path.relative_to(result).as_posix()}" in done.stdout or (
        target == "manifest.json" and ("changed: manifest.json" in done.stdout or "not valid JSON" in done.stdout))


def test_missing_and_added_files_are_caught(result: Path) -> None:
    (records,) = result.glob("cells/*/records.jsonl.gz")
    records.unlink()
    (result / "cells" / "extra.txt").write_text("planted")
    done = cli("verify", str(result))
    assert done.returncode == 1
    assert "missing: cells/" in done.stdout and "added: cells/extra.txt" in done.stdout


def test_signature_by_the_organisations_key(result: Path, tmp_path: Path) -> None:
    private, public = tmp_path / "org.pem", tmp_path / "org.pub"
    assert cli("keygen", "--private", str(private), "--public", str(public)).returncode == 0
    assert cli("keygen", "--private", str(private), "--public", str(public)).returncode == 2  # never overwrite
    assert cli("sign", str(result), "--key", str(private)).returncode == 0
    done = cli("verify", str(result), "--public-key", str(public))
    assert done.returncode == 0 and "signature valid" in done.stdout

    other_private, other_public = tmp_path / "x.pem", tmp_path / "x.pub"
    cli("keygen", "--private", str(other_private), "--public", str(other_public))
    done = cli("verify", str(result), "--public-key", str(other_public))
    assert done.returncode == 1 and "signature: INVALID" in done.stdout

    (cell_json,) = result.glob("cells/*/cell.json")
    flip_one_byte(cell_json)
    done = cli("verify", str(result), "--public-key", str(public))
    assert done.returncode == 1 and "changed: cells/" in done.stdout


def test_bad_input_exits_2(tmp_path: Path) -> None:
    done = cli("verify", str(tmp_path))
    assert done.returncode == 2 and "not a result set" in done.stderr and "Traceback" not in done.stderr
    done = cli("sign", str(tmp_path), "--key", str(tmp_path / "none.pem"))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_whitespace_only_edit_of_the_manifest_is_caught(result: Path) -> None:
    manifest = result / "manifest.json"
    sealed = json.loads(manifest.read_text())["integrity"]
    assert len(sealed["manifest_bytes_sha256"]) == 64 and len(sealed["manifest_sha256"]) == 64
    manifest.write_bytes(manifest.read_bytes().replace(b'{\n  "schema_version"', b'{\n   "schema_version"', 1))
    assert json.loads(manifest.read_text())["integrity"] == sealed  # the same JSON, other bytes
    done = cli("verify", str(result))
    assert done.returncode == 1 and "changed: manifest.json" in done.stdout, done.stdout


def test_an_added_empty_directory_is_caught(result: Path) -> None:
    (result / "cells" / "planted" / "deeper").mkdir(parents=True)
    done = cli("verify", str(result))
    assert done.returncode == 1 and "added: cells/planted/ (an empty directory)" in done.stdout, done.stdout


@pytest.mark.parametrize("old", ["tests/data/nightly-1", "results/examples/quickstart-2core-epyc-vm"])
def test_old_seals_still_verify_and_upgrade_to_byte_seals(old: str, tmp_path: Path) -> None:
    source = Path(__file__).resolve().parent.parent / old
    done = cli("verify", str(source))
    assert done.returncode == 0 and "sealed before byte seals" in done.stdout, done.stdout
    copy = tmp_path / "old"
    shutil.copytree(source, copy)
    manifest = copy / "manifest.json"
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(content, indent=4) + "\n")  # only whitespace: the old seal cannot tell
    assert cli("verify", str(copy)).returncode == 0
    done = cli("verify", "--upgrade-seal", str(copy))
    assert done.returncode == 0 and "re-sealed" in done.stdout and "sealed before" not in done.stdout, done.stdout
    upgraded = json.loads(manifest.read_text())
    assert {k: v for k, v in upgraded.items() if k != "integrity"} == \
        {k: v for k, v in content.items() if k != "integrity"}  # the content is what it was
    manifest.write_bytes(manifest.read_bytes().replace(b"\n", b"\n ", 1))
    done = cli("verify", str(copy))
    assert done.returncode == 1 and "changed: manifest.json" in done.stdout  # from now on every byte counts
