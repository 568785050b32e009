"""Everything a run could only find out later, checked when a profile is loaded: by `validate` and by
`run` (both load through bench.profile.spec.profile_from_text) before anything starts.

- every model exists: a known card, or a directory that is there;
- every prompts file is UTF-8 JSONL of {"prompt": text, "output_tokens": n?} objects, every trace
  file a valid trace (bench/profile/trace_file.py);
- every request fits its model: input plus output tokens within the model's context (the card's or
  the local config's max_position_embeddings, or a vLLM engine's max_model_len), so no cell tries to
  hold what the model cannot (a 10M-token prompt grows a cell until the machine runs out);
- every API key variable a served engine names is set.

Problems are collected, each with the profile field it belongs to, and raised as one ProfileError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.errors import ProfileError
from bench.profile.loading import decode_utf8, resolve_relative
from bench.profile.model_spec import ModelSpec
from bench.profile.spec import Profile
from bench.profile.workloads import SALT_TOKENS

Problem = tuple[str, str]
# Tokens a chat template adds around one message (ChatML: about 10): a conversation's turn must fit with them.
CHAT_TEMPLATE_ALLOWANCE = 16
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def check_profile(profile: Profile, path: Path, label: str) -> None:
    problems: list[Problem] = []
    contexts = []
    for i, model in enumerate(profile.models):
        found, problem = _model_context(model, i, path)
        if problem:
            problems.append(problem)
        contexts.append(found)
    prompt_outputs: dict[int, int | None] = {}
    for i, workload in enumerate(profile.workloads):
        if workload.prompts_file:
            outputs, problem = _prompts_file(resolve_relative(workload.prompts_file, path), workload.prompts_file)
            if problem:
                problems.append((f"workloads[{i}].prompts_file", problem))
            prompt_outputs[i] = outputs
        if workload.conversations_file:
            problem = _conversations_file(resolve_relative(workload.conversations_file, path))
            if problem:
                problems.append((f"workloads[{i}].conversations_file", problem))
    traces: dict[int, list[Any]] = {}
    for j, scenario in enumerate(profile.scenarios):
        if scenario.kind == "trace":
            entries, problem = _trace(resolve_relative(scenario.file, path))
            if problem:
                problems.append((f"scenarios[{j}].file", problem))
            traces[j] = entries
    for i, engine in enumerate(profile.engines):
        key_env = getattr(engine, "api_key_env", None)
        if key_env and not os.environ.get(key_env):
            problems.append((f"engines[{i}].api_key_env",
                             f"the environment variable {key_env} is not set (the API key is read from it)"))
    for model, context in zip(profile.models, contexts, strict=True):
        if context is not None:
            problems += _fits(profile, model, context, prompt_outputs, traces)
    if problems:
        raise ProfileError(label, list(dict.fromkeys(problems)))


# --- models ---------------------------------------------------------------------------------------


def _model_context(model: ModelSpec, index: int, profile_path: Path) -> tuple[tuple[int, str] | None, Problem | None]:
    """(positions, where that number comes from) of a model, or a problem naming its field."""
    if model.card is not None:
        from bench.models import UnknownCardError, load_card

        try:
            card = load_card(model.card)
        except UnknownCardError as exc:
            return None, (f"models[{index}].card", str(exc))
        return _context_of(card.config, f"card {card.name}"), None
    directory = resolve_relative(model.path or "", profile_path)
    if directory.is_file() and directory.suffix.lower() == ".gguf":  # llama.cpp's file: its header says
        return _gguf_context(directory), None
    if not directory.is_dir():
        what = "file" if directory.suffix.lower() == ".gguf" else "directory"
        return None, (f"models[{index}].path", f"{what} not found: {model.path}")
    try:  # a broken directory is the run's to report, per cell (other models still run): only read what is there
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return _context_of(config, f"{directory.name}/config.json") if isinstance(config, dict) else None, None


def _gguf_context(path: Path) -> tuple[int, str] | None:
    """A GGUF's context length from its header; a broken file is the run's to report, per cell."""
    from bench.models.gguf_read import GgufError, hf_config, read_gguf

    try:
        return _context_of(hf_config(read_gguf(path)), path.name)
    except (GgufError, OSError, ValueError, KeyError):
        return None


def _context_of(config: dict[str, Any], source: str) -> tuple[int, str] | None:
    for scope in (config, config.get("text_config") if isinstance(config.get("text_config"), dict) else {}):
        for key in _CONTEXT_KEYS:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, f"{key} of {source}"
    return None


# --- files ----------------------------------------------------------------------------------------


def _prompts_file(path: Path, name: str) -> tuple[int | None, str | None]:
    """(the largest output_tokens an entry asks for, a problem) of a prompts file."""
    try:
        text = decode_utf8(path.read_bytes(), name)
    except FileNotFoundError:
        return None, f"file not found: {name}"
    except OSError as exc:
        return None, f"{name}: cannot read: {exc.strerror or exc}"
    except ProfileError as exc:
        return None, str(exc)
    largest: int | None = None
    prompts = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            return None, f"{name} line {number}: not JSON ({exc.msg})"
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            return None, f"{name} line {number}: expected a JSON object with a 'prompt' text"
        output = entry.get("output_tokens")
        if output is not None:
            if not isinstance(output, int) or isinstance(output, bool) or output < 1:
                return None, f"{name} line {number}: output_tokens must be a whole number >= 1"
            largest = max(largest or 0, output)
        prompts += 1
    if not prompts:
        return None, f"{name}: no prompts"
    return largest, None


def _conversations_file(path: Path) -> str | None:
    from bench.profile.conversations import read_conversations_file

    try:
        read_conversations_file(path)
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}"
    except (ValueError, ProfileError) as exc:
        return str(exc)
    return None


def _trace(path: Path) -> tuple[list[Any], str | None]:
    from bench.profile.trace_file import load_trace

    try:
        return load_trace(path), None
    except ProfileError as exc:
        where = "; ".join(f"{field}: {problem}" if field else problem for field, problem in exc.problems)
        return [], f"{exc.path}: {where}"


# --- lengths against the context --------------------------------------------------------------------


def server_max_model_len(server: Any) -> int | None:
    """A managed vLLM server's --max-model-len (N or =N in its args), the context it serves."""
    if server is None or server.kind != "vllm":
        return None
    args = list(server.args)
    for k, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--max-model-len=") else (
            args[k + 1] if arg == "--max-model-len" and k + 1 < len(args) else None)
        if value is not None and value.isdigit():
            return int(value)
    return None


def _largest(dist: Any) -> int | None:
    """The longest length a distribution asks for (a normal without a max: its mean, which half exceed)."""
    if dist is None:
        return None
    kind = dist.dist
    if kind == "fixed":
        return int(dist.value)
    if kind == "uniform":
        return int(dist.max)
    if kind == "list":
        return max(dist.values)
    return int(dist.max) if dist.max is not None else max(int(dist.min), round(dist.mean))


def _fits(profile: Profile, model: ModelSpec, context: tuple[int, str], prompt_outputs: dict[int, int | None],
          traces: dict[int, list[Any]]) -> list[Problem]:
    problems: list[Problem] = []
    name = model.display_name
    limits = [context]
    for i, engine in enumerate(profile.engines):
        if getattr(engine, "max_model_len", None):
            limits.append((int(engine.max_model_len), f"engines[{i}].max_model_len"))
        served = server_max_model_len(getattr(engine, "server", None))
        if served is not None:
            limits.append((served, f"engines[{i}].server.args --max-model-len"))
    positions, source = min(limits)

    def too_long(field: str, inputs: int | None, outputs: int | None) -> None:
        total = (inputs or 0) + (outputs or 0)
        if total > positions:
            what = (f"{inputs:,} input + {outputs:,} output tokens" if inputs is not None and outputs is not None
                    else f"{total:,} tokens")
            problems.append((field, f"{what} do not fit {name}'s context of {positions:,} tokens ({source})"))

    uses_workloads = any(s.kind != "prefill-decode" for s in profile.scenarios)
    for i, workload in enumerate(profile.workloads if uses_workloads else []):
        outputs = prompt_outputs.get(i) if workload.prompts_file else None
        outputs = max(outputs or 0, _largest(workload.output_tokens) or 0)
        if workload.prompts_file:  # prompt lengths are known only once tokenised: the outputs alone
            too_long(f"workloads[{i}].output_tokens", None, outputs)
            continue
        inputs = max(_largest(workload.input_tokens) or 0, workload.shared_prefix_tokens + 1)
        if workload.documents is not None:  # the question follows a whole document
            inputs += workload.documents.tokens
        if workload.salt:
            inputs += SALT_TOKENS
        if workload.kind == "conversation":
            # a turn's prompt is at least its message in the chat template; older history is dropped to fit
            inputs += CHAT_TEMPLATE_ALLOWANCE
        field = "output_tokens" if outputs > positions else "input_tokens"
        too_long(f"workloads[{i}].{field}", inputs, outputs)
    for j, scenario in enumerate(profile.scenarios):
        if scenario.kind == "prefill-decode":
            deepest = max(scenario.depths)
            too_long(f"scenarios[{j}].prompt_tokens", deepest + max(scenario.prompt_tokens), max(scenario.gen_tokens))
        for entry_number, entry in enumerate(traces.get(j, []), start=1):
            if entry.input_tokens + entry.output_tokens > positions:
                too_long(f"scenarios[{j}].file (entry {entry_number}, by time)", entry.input_tokens,
                         entry.output_tokens)
                break
    return problems
