"""Profiles: validation errors name the file and field; the CLI exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.errors import ProfileError
from bench.profile.cells import expand
from bench.profile.loading import load_profile
from conftest import REPO, tiny_profile


def test_shipped_profiles_validate() -> None:
    for path in sorted((REPO / "profiles").glob("*.yaml")):
        profile = load_profile(path)
        assert expand(profile, path), path


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda p: p["engines"][0].update(dtype="float64"), "engines[0].dtype", "float32"),
        (lambda p: p["engines"][0].update(threads=0), "engines[0].threads", "greater than or equal"),
        (lambda p: p["engines"][0].update(colour="blue"), "engines[0].colour", "Extra inputs"),
        (lambda p: p["engines"][0].update(kind="tensorrt"), "engines[0]", "kind"),
        (lambda p: p["models"][0].update(path="/x"), "models[0]", "exactly one of 'card'"),
        (lambda p: p["workloads"][0].update(input_tokens={"dist": "uniform", "min": 9, "max": 3}),
         "workloads[0].input_tokens", "min must not exceed max"),
        (lambda p: p["scenarios"][0].update(requests=-1), "scenarios[0].requests", "greater than"),
        (lambda p: p["scenarios"].append({"kind": "offline", "batch_sizes": []}),
         "scenarios[1].batch_sizes", "at least 1"),
        (lambda p: p["run"].update(repetitions="many"), "run.repetitions", "integer"),
        (lambda p: p.pop("models"), "models", "Field required"),
        (lambda p: p.update(workloads=[]), "", "need at least one entry under 'workloads'"),
    ],
)
def test_bad_profiles_name_file_and_field(write_profile, mutate, field: str, words: str) -> None:
    data = tiny_profile()
    mutate(data)
    path = write_profile(data)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message
    assert any(f == field and words in problem for f, problem in caught.value.problems), message


def test_yaml_syntax_error_names_line(write_profile) -> None:
    path = write_profile("name: x\nmodels: [\n  - card: tiny\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert "YAML syntax error" in str(caught.value) and "line" in str(caught.value)


def test_missing_prompts_file_is_named(write_profile) -> None:
    data = tiny_profile(workloads=[{"name": "f", "prompts_file": "nope.jsonl", "output_tokens": 4}])
    with pytest.raises(ProfileError) as caught:
        load_profile(write_profile(data))
    assert caught.value.problems == [("workloads[0].prompts_file", "file not found: nope.jsonl")]


@pytest.mark.parametrize("verb", ["validate", "run"])
def test_cli_exits_2_without_traceback(write_profile, verb: str) -> None:
    data = tiny_profile()
    data["engines"][0]["dtype"] = "int3"
    path = write_profile(data)
    done = subprocess.run([sys.executable, "-m", "bench", verb, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert str(path) in done.stderr and "engines[0].dtype" in done.stderr


def test_cli_missing_file_exits_2(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "validate", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "file not found" in done.stderr and "Traceback" not in done.stderr


def test_the_documented_profile_example_is_valid() -> None:
    import re

    import yaml

    from bench.profile.loading import parse_profile

    text = (REPO / "docs" / "profiles.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert example, "docs/profiles.md has no YAML profile example"
    profile = parse_profile(yaml.safe_load(example.group(1)), "docs/profiles.md")
    assert len(profile.models) == 2 and profile.run.rules == "nightly"
