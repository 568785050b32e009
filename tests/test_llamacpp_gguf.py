"""GGUF files with real llama.cpp: every card architecture written to GGUF loads in llama.cpp with the
card's parameter count; tiny-llama's GGUF is the same model as its safetensors (the same logits as
transformers, the same token ids for the same text); llama.cpp's own quantiser makes each type asked
for, cached; a broken or truncated GGUF is named as such before anything loads it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import optional_engine

pytestmark = optional_engine("llamacpp", ("llama_cpp", "gguf"), "pip install -e '.[llamacpp]'; see docs/llamacpp.md")

# A child process loads a GGUF, decodes four tokens and prints what llama.cpp made of it (a native crash
# there fails one architecture, not the test session).
_LOAD = r"""
import json, sys
import numpy as np
import llama_cpp as L
silent = L.llama_log_callback(lambda *a: None)
L.llama_log_set(silent, None)
L.llama_backend_init()
params = L.llama_model_default_params()
params.n_gpu_layers = 0
model = L.llama_model_load_from_file(sys.argv[1].encode(), params)
assert model, "llama.cpp could not load the file"
cp = L.llama_context_default_params()
cp.n_ctx, cp.n_threads, cp.n_threads_batch = 256, 1, 1
ctx = L.llama_init_from_model(model, cp)
batch = L.llama_batch_init(8, 0, 1)
for i, t in enumerate([1, 5, 9, 20]):
    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = t, i, 1, 0, i == 3
batch.n_tokens = 4
assert L.llama_decode(ctx, batch) == 0
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
print(json.dumps({"params": L.llama_model_n_params(model), "finite": bool(np.isfinite(logits).all()),
                  "vocab": n_vocab, "logits": [float(x) for x in logits]}))
"""


def _load(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mini(card):  # the card's architecture at a size that loads in a second
    from bench.models import Card

    c = copy.deepcopy(card.config)
    heads, kv = int(c["num_attention_heads"]), int(c.get("num_key_value_heads") or c["num_attention_heads"])
    c.update(hidden_size=128, num_attention_heads=4, num_key_value_heads=max(1, 4 * kv // heads),
             intermediate_size=256, num_hidden_layers=2, vocab_size=512, bos_token_id=1, eos_token_id=2)
    if c.get("head_dim"):
        c["head_dim"] = 32
    if "pad_token_id" in c:
        c["pad_token_id"] = 0
    if "num_local_experts" in c:
        c["num_local_experts"] = 4
    if c.get("sliding_window"):
        c["sliding_window"] = 64
    specials = {"0": "<unk>", "1": "<s>", "2": "</s>", "3": "<|endoftext|>"}
    return Card(f"mini-{c['model_type']}", f"mini {c['model_type']}", None, "", "", c,
                {"special_tokens": specials, "add_bos_token": True})


def test_every_card_architecture_loads_in_llama_cpp(tmp_path: Path) -> None:
    from bench.models import list_cards
    from bench.models.gguf import gguf_plan, write_f16

    seen = set()
    for card in list_cards():
        mini = _mini(card)
        kind = (mini.config["model_type"], bool(mini.config.get("rope_scaling")))  # llama3 RoPE: rope_freqs
        if kind in seen:
            continue
        seen.add(kind)
        path = tmp_path / f"{card.name}.gguf"
        write_f16(mini, 0, path)
        loaded = _load(path)
        extra = sum(t.nbytes // 4 for t in gguf_plan(mini.config) if t.name == "rope_freqs.weight")
        assert loaded["params"] == mini.parameter_count() + extra, card.name
        assert loaded["finite"] and loaded["vocab"] == 512, card.name
    assert {kind[0] for kind in seen} == {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "phi3"}


def test_the_gguf_is_the_same_model_as_the_safetensors(model_cache: Path) -> None:
    """Same seeds, same values, llama.cpp's layout: transformers (float32) and llama.cpp (F16) give the
    same next-token logits for the same ids, and the GGUF's tokenizer the same ids for the same text."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.models import resolve_model

    gguf = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True, quantization="F16")
    directory = resolve_model("tiny-llama", None, "float32", 0, None).path
    ours = np.array(_load(gguf.path)["logits"])
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor([[1, 5, 9, 20]])).logits[0, -1].numpy()
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9999
    assert int(ours.argmax()) == int(theirs.argmax())

    from bench.engines.llamacpp_engine import LlamaCppEngine
    from bench.profile.engine_specs import LlamaCppEngineSpec

    engine = LlamaCppEngine(LlamaCppEngineSpec(kind="llamacpp", threads=1, n_ctx=256), str(gguf.path),
                            {"config": gguf.config, "quantization": "F16", "gguf": gguf.gguf})
    engine.load()
    text = "De snelle bruine vos springt over de luie hond. Hoeveel gebruikers? 1024 tokens, 3.14 — ✓"
    assert engine.encode(text) == AutoTokenizer.from_pretrained(directory).encode(text)
    assert engine.decode(engine.encode(text)[1:]) == text  # byte-level BPE round-trips (after <s>)
    engine.close()


def test_llama_cpp_quantises_each_type_once(model_cache: Path) -> None:
    from bench.models import resolve_model
    from bench.models.gguf_read import read_gguf

    q8 = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True, quantization="Q8_0")
    q4 = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True, quantization="q4_k_m")
    f16 = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True)
    assert (q8.dtype, q4.dtype, f16.dtype) == ("Q8_0", "Q4_K_M", "F16")
    assert "Q8_0" in q8.gguf["bytes_by_type"]
    assert {"Q4_K", "Q6_K"} <= set(q4.gguf["bytes_by_type"])  # a K-quant mix, as llama-quantize makes it
    assert q4.weight_bytes < q8.weight_bytes < f16.weight_bytes
    assert q4.identity["quantizer"].startswith("llama-cpp-python") and f16.identity["quantizer"] is None
    assert read_gguf(q4.path).metadata["lokaal_bench.card"] == "tiny-llama"  # the marker survives quantising
    before = q4.path.stat().st_mtime_ns
    again = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True, quantization="Q4_K_M")
    assert again.path == q4.path and again.path.stat().st_mtime_ns == before  # cached, not rebuilt
    assert again.identity == q4.identity


def test_a_local_gguf_keeps_its_identity_and_broken_ones_are_named(model_cache: Path, tmp_path: Path) -> None:
    from bench.models import ModelError, resolve_model

    source = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True, quantization="Q8_0").path
    data = source.read_bytes()
    local = tmp_path / "x.gguf"
    local.write_bytes(data)
    found = resolve_model(None, str(local), "auto", 0, None, gguf=True)
    assert found.synthetic and found.card == "tiny-llama" and found.dtype == "Q8_0"
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated GGUF file"):
        resolve_model(None, str(truncated), "auto", 0, None, gguf=True)
    header_cut = tmp_path / "header.gguf"
    header_cut.write_bytes(data[:4000])
    with pytest.raises(ModelError, match="truncated"):
        resolve_model(None, str(header_cut), "auto", 0, None, gguf=True)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGML" + data[4:])
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve_model(None, str(broken), "auto", 0, None, gguf=True)
    with pytest.raises(ModelError, match="llamacpp engine"):
        resolve_model(None, str(local), "float32", 0, None)  # a GGUF on the transformers engine
