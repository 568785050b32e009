"""llama.cpp's settings, labels, sizes and commands that need no llama.cpp: the profile's validation
(an unknown quantisation type is bad input naming its field), cell identities (existing ones unchanged),
labels that show the quantisation, the GGUF tensor layout against transformers' own, the quantised
sizes in fit, the roofline and project, llama-server's command line, and the served client's token
count from llama-server's per-chunk timings. The llama.cpp runs are in tests/test_llamacpp_*.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile.cells import cell_id, cell_identity, engine_label, expand, side_by_side
from bench.profile.engine_specs import LlamaServerSpec
from bench.profile.loading import load_profile, parse_profile
from conftest import tiny_profile

REPO = Path(__file__).resolve().parent.parent


def test_an_unknown_quantisation_type_is_bad_input_naming_the_field(write_profile) -> None:
    path = write_profile(tiny_profile(engines=[{"kind": "llamacpp", "quantization": ["Q4_K_M", "Q9_K"]}]))
    done = subprocess.run([sys.executable, "-m", "bench", "validate", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "engines[0].quantization" in done.stdout + done.stderr
    assert "Q9_K" not in (done.stdout + done.stderr).split("Input should be")[-1]  # the known types are listed
    assert "Traceback" not in done.stderr


def test_a_quantised_v_cache_without_flash_attention_is_bad_input() -> None:
    from bench.errors import ProfileError

    base = {"name": "x", "models": [{"card": "tiny-llama"}],
            "scenarios": [{"kind": "prefill-decode", "prompt_tokens": [8], "gen_tokens": [4]}]}
    with pytest.raises(ProfileError, match=r"engines\[0\].*kv_cache_type q8_0 needs flash attention"):
        parse_profile({**base, "engines": [{"kind": "llamacpp", "kv_cache_type": "q8_0", "flash_attn": "off"}]},
                      "x.yaml")
    parse_profile({**base, "engines": [{"kind": "llamacpp", "kv_cache_type": "q8_0"}]}, "x.yaml")  # auto: fine


def test_llamacpp_settings_sweep_as_lists_one_cell_each(write_profile) -> None:
    path = write_profile(tiny_profile(engines=[{"kind": "llamacpp", "quantization": ["q4_k_m", "Q8_0"],
                                                "threads": [1, 2], "kv_cache_type": ["f16", "q8_0"]}]))
    cells = expand(load_profile(path), path)
    engines = [c.engine for c in cells]
    assert len(cells) == 8
    assert {(e.quantization, e.threads, e.kv_cache_type) for e in engines} == {
        (q, t, k) for q in ("Q4_K_M", "Q8_0") for t in (1, 2) for k in ("f16", "q8_0")}
    assert "llamacpp/Q4_K_M/t1/kv-q8_0" in {engine_label(e.model_dump()) for e in engines}


def test_existing_engines_keep_their_cell_ids() -> None:
    """The new server kind and engine kind leave the dumps (and so the ids) of existing engines alone."""
    base = {"name": "x", "models": [{"card": "tiny-llama"}],
            "workloads": [{"name": "w", "input_tokens": 8, "output_tokens": 4}]}
    served = parse_profile({**base, "engines": [{"kind": "openai", "server": {"kind": "vllm"}}],
                            "scenarios": [{"kind": "concurrency", "users": [2]}]}, "x.yaml")
    assert served.engines[0].model_dump()["server"] == {
        "kind": "vllm", "args": [], "command": None, "env": {}, "health_path": "/health", "startup_timeout_s": 600,
        "weights": "files"}  # added by issue 15; out of the identity at this default (tests/test_cells.py)
    local = parse_profile({**base, "engines": [{"kind": "transformers", "dtype": "float32"}],
                           "scenarios": [{"kind": "single-stream"}]}, "x.yaml")
    engine = local.engines[0].model_dump()
    identity = cell_identity({"card": "tiny-llama", "seed": 0}, engine, {"name": "w", "input_tokens": 8}, {"kind": "x"})
    assert set(identity["engine"]) == {"kind", "dtype", "device", "threads", "attn_implementation", "compile"}
    assert cell_id(identity) == cell_id(json.loads(json.dumps(identity)))


def test_a_llama_server_spec_and_its_label() -> None:
    profile = parse_profile({
        "name": "x", "models": [{"card": "tiny-llama"}],
        "engines": [{"kind": "openai", "server": {"kind": "llamacpp", "quantization": "q8_0", "parallel": 2,
                                                  "cont_batching": False}}],
        "workloads": [{"name": "w", "input_tokens": 8, "output_tokens": 4}],
        "scenarios": [{"kind": "concurrency", "users": [2]}]}, "x.yaml")
    engine = profile.engines[0].model_dump()
    assert engine["server"]["quantization"] == "Q8_0"
    assert engine_label(engine) == "openai/llama-server/Q8_0/np2/no-cb"


def test_comparable_cells_sit_side_by_side() -> None:
    labels = ["m | transformers/float32 | w | single-stream", "m | transformers/float32 | w | offline b=8",
              "m | llamacpp/Q4_K_M/t2 | w | single-stream", "m | llamacpp/Q4_K_M/t2 | w | offline b=8",
              "n | llamacpp/Q4_K_M/t2 | pp512+tg128"]
    assert side_by_side(labels, lambda x: x) == [labels[0], labels[2], labels[1], labels[3], labels[4]]


def test_the_gguf_layout_is_transformers_own_for_every_card(tmp_path: Path) -> None:
    """The GGUF writer's Hugging Face tensor list (which seeds the synthetic values) is the one transformers
    builds for the card, name for name and shape for shape."""
    from bench.models import list_cards
    from bench.models.gguf import hf_tensors
    from bench.models.materialise import tensor_plan

    for card in list_cards():
        directory = tmp_path / card.name
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(card.config))
        expected = {s.name: (s.shape, s.init) for s in tensor_plan(directory)}
        assert {s.name: (s.shape, s.init) for s in hf_tensors(card.config)} == expected, card.name


def test_fit_knows_quantised_sizes_and_the_kv_cache_type() -> None:
    from bench.models import load_card
    from bench.planning.memory_fit import fit_memory

    card = load_card("llama-3.2-1b")
    bf16 = fit_memory(card, "bfloat16", 4096, 1, 2**40)
    q4 = fit_memory(card, "bfloat16", 4096, 1, 2**40, quantization="Q4_K_M")
    q8_kv = fit_memory(card, "bfloat16", 4096, 1, 2**40, quantization="Q4_K_M", kv_cache_type="q8_0")
    assert q4.weights < bf16.weights / 3  # about 5 bits a weight against 16
    assert q4.kv_cache == bf16.kv_cache  # an f16 cache is a bf16 cache's size
    assert q8_kv.kv_cache == pytest.approx(bf16.kv_cache * 34 / 64)
    exact = fit_memory(card, "bfloat16", 4096, 1, 2**40, quantization="Q4_K_M", weight_bytes=807_000_000)
    assert exact.weights == 807_000_000


def test_fit_and_project_take_a_quantisation_on_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "fit", "--card", "qwen2.5-7b", "--quantization", "q4_k_m",
                           "--kv-cache-type", "q8_0", "--memory-gib", "8"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Q4_K_M" in done.stdout and "yes" in done.stdout  # 7.6B at about 5 bits fits in 8 GiB
    bad = subprocess.run([sys.executable, "-m", "bench", "fit", "--quantization", "Q7_X"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Q7_X" in bad.stderr


def test_the_roofline_of_a_quantised_model_reads_its_real_bytes() -> None:
    from bench.measure.roofline import bounds, model_inputs
    from bench.models import load_card

    config = load_card("qwen2.5-7b").config
    bf16 = model_inputs(config, "bfloat16")
    tensors = 4_680_000_000
    q4 = model_inputs(config, "Q4_K_M", gguf={"tensor_bytes": tensors, "decode_read_bytes": tensors - 426_000_000,
                                              "file_type": "Q4_K_M"}, kv_cache_type="q8_0")
    assert q4 is not None and bf16 is not None
    limits = {"bandwidth_bytes_s": 30e9, "flops_s": 1e12}
    decode_bf16 = bounds(bf16, limits, 1, 128, 128)["decode"]["memory bandwidth"]
    decode_q4 = bounds(q4, limits, 1, 128, 128)["decode"]["memory bandwidth"]
    assert decode_q4 > 3 * decode_bf16
    assert q4["kv_cache_bytes_per_token"] < bf16["kv_cache_bytes_per_token"]
    assert decode_q4 == pytest.approx(30e9 / (tensors - 426_000_000 + 192 * q4["kv_cache_bytes_per_token"]))


def test_llama_server_command_from_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.serving.llama_server import llama_server_command

    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    spec = {"kind": "llamacpp", "binary": str(binary), "parallel": 3, "cont_batching": True, "threads": 2,
            "n_ctx": 2048, "kv_cache_type": "q8_0", "flash_attn": "on", "use_mmap": False, "use_mlock": True,
            "numa": "distribute", "args": ["--seed", "1"]}
    command = llama_server_command(LlamaServerSpec.model_validate(spec), Path("/m/x.gguf"), 8123)
    text = " ".join(command)
    assert command[0] == str(binary)
    for expected in ("--model /m/x.gguf", "--host 127.0.0.1", "--port 8123", "--parallel 3", "--cont-batching",
                     "--ctx-size 2048", "--kv-unified", "--threads 2", "--cache-type-k q8_0", "--cache-type-v q8_0",
                     "--flash-attn on", "--load-mode mlock", "--numa distribute", "--cache-ram 0", "--metrics",
                     "--seed 1"):
        assert expected in text
    monkeypatch.setenv("LOKAAL_BENCH_LLAMA_SERVER", str(binary))
    assert llama_server_command(LlamaServerSpec(kind="llamacpp"), Path("/m/x.gguf"), 1)[0] == str(binary)


def test_a_missing_llama_server_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.serving.llama_server import LlamaServerMissing, find_tool
    from bench.serving.managed import ServerStartError

    monkeypatch.setenv("LOKAAL_BENCH_LLAMA_CPP_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("LOKAAL_BENCH_LLAMA_SERVER", raising=False)
    with pytest.raises(LlamaServerMissing, match=r"scripts/build_llama_cpp_tools\.sh") as caught:
        find_tool("llama-server", None, "LOKAAL_BENCH_LLAMA_SERVER")
    assert isinstance(caught.value, ServerStartError)  # the runner fails the cell, not the run


def test_llama_server_chunks_are_counted_by_its_own_token_count() -> None:
    """llama-server holds back a token ending inside a UTF-8 character and sends it with the next one;
    its per-chunk timings.predicted_n keeps the count (and each token's time) exact."""
    from bench.serving.client import Connection, StreamResult

    result = StreamResult(sent=0.0)
    events = [({"choices": [{"text": "a", "finish_reason": None}], "timings": {"predicted_n": 1}}, 1.0),
              ({"choices": [{"text": "é", "finish_reason": None}], "timings": {"predicted_n": 3}}, 2.0),
              ({"choices": [{"text": "", "finish_reason": "length"}], "timings": {"predicted_n": 4},
                "usage": {"completion_tokens": 4}}, 3.0)]
    for message, now in events:
        Connection._event(b"data: " + json.dumps(message).encode(), now, result)
    assert result.token_times == [1.0, 2.0, 2.0, 3.0]
    assert result.usage_completion_tokens == 4 and result.first_token == 1.0


def test_system_info_gives_the_cpu_features() -> None:
    from bench.engines.llamacpp_engine import parse_system_info

    info = parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | OPENMP = 1 | ")
    assert info["CPU"] == {"SSE3": True, "AVX2": True, "AVX512": False, "AMX_INT8": True, "OPENMP": True}


def test_the_cpu_gguf_profile_is_valid_and_estimated(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "validate", str(REPO / "profiles" / "cpu-gguf.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "estimated total" in done.stdout
    cells = expand(load_profile(REPO / "profiles" / "cpu-gguf.yaml"), REPO / "profiles" / "cpu-gguf.yaml")
    kinds = {c.engine.kind for c in cells}
    assert kinds == {"llamacpp", "transformers", "openai"}
    assert {c.scenario.kind for c in cells} >= {"single-stream", "offline", "prefill-decode", "concurrency"}
    quantised = {(c.model.card, c.engine.quantization) for c in cells if c.engine.kind == "llamacpp"}
    assert {("llama-3.2-1b", "Q4_K_M"), ("llama-3.2-1b", "Q8_0"), ("llama-3.2-3b", "Q4_K_M"),
            ("llama-3.2-3b", "Q8_0"), ("qwen2.5-7b", "Q4_K_M")} <= quantised
