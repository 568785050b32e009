"""Materialising cards into loadable model directories with synthetic weights, and their tokenizers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402

from bench.models import (  # noqa: E402
    MARKER_NAME,
    Card,
    inspect_local_model,
    load_card,
    materialise,
    read_marker,
    resolve_model,
)
from bench.models.cards import list_cards  # noqa: E402
from bench.models.materialise import cache_entry_name, tensor_plan  # noqa: E402
from bench.models.tokenizer import write_tokenizer  # noqa: E402

TEXT = "Hallo wereld! The benchmark measures 1234 tokens/s — één server, €5, 中文 😀.\n  def f(x): return x"
TINY_SIZES = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1024}  # fmt: skip


def shrunk(name: str) -> Card:
    """A card with `name`'s architecture conventions (biases, norms, tying, MoE, RoPE) at toy size."""
    card = load_card(name)
    config = {**card.config, **TINY_SIZES}
    if "head_dim" in config:
        config["head_dim"] = 16
    if "num_local_experts" in config:
        config["num_local_experts"] = 4

    def remap(token_id: int) -> int:  # keep special ids inside the smaller vocabulary
        return token_id if token_id < 1000 else token_id % 1000 + 3

    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = config.get(key)
        if isinstance(value, list):
            config[key] = [remap(v) for v in value]
        elif value is not None:
            config[key] = remap(value)
    special = {str(remap(int(k))): v for k, v in card.tokenizer.get("special_tokens", {}).items()}
    tokenizer = {**card.tokenizer, "special_tokens": special}
    return dataclasses.replace(card, name=f"toy-{name}", config=config, tokenizer=tokenizer)


def load(path: Path, dtype: Any = None) -> Any:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=dtype or torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model


def weight_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialise(load_card("tiny-llama"), "float32", seed=0, cache_dir=tmp_path_factory.mktemp("cache"))


# -- the tiny card -----------------------------------------------------------------------------------------------


def test_tiny_directory_is_complete(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", MARKER_NAME} <= names  # fmt: skip
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["torch_dtype"] == "float32"
    marker = read_marker(tiny_dir)
    assert marker is not None
    assert marker["card"] == "tiny-llama" and marker["seed"] == 0 and marker["dtype"] == "float32"
    digest = hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    assert marker["weight_files"]["model.safetensors"]["sha256"] == digest
    assert marker["parameter_count"] == load_card("tiny-llama").parameter_count()


def test_tiny_loads_and_generates(tiny_dir: Path) -> None:
    model = load(tiny_dir)
    assert sum(p.numel() for p in model.parameters()) == load_card("tiny-llama").parameter_count()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, stored once
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 4096)
    assert torch.isfinite(logits).all() and logits.std() > 0
    out = model.generate(ids[:, :8], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 12)


def test_tiny_weights_look_initialised(tiny_dir: Path) -> None:
    with safe_open(tiny_dir / "model.safetensors", "pt") as f:
        names = set(f.keys())
        assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names  # tied: stored once
        embed = f.get_tensor("model.embed_tokens.weight")
        assert abs(embed.std().item() - 0.02) < 0.001 and abs(embed.mean().item()) < 0.001
        assert torch.equal(f.get_tensor("model.norm.weight"), torch.ones(256))


def test_tokenizer_matches_config(tiny_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    assert len(tokenizer) == 4096
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    ids = tokenizer(TEXT)["input_ids"]
    assert ids[0] == 1  # llama-style: BOS prepended
    assert tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert len(ids) < len(TEXT.encode())  # merges do compress


@pytest.mark.parametrize(
    ("name", "bos", "eos", "add_bos"),
    [("qwen2.5-7b", 151643, 151643, False), ("llama-3.3-70b", 128000, 128001, True), ("phi-3-mini", 1, 32000, False)],
)
def test_tokenizer_full_vocab(tmp_path: Path, name: str, bos: int, eos: int, add_bos: bool) -> None:
    card = load_card(name)
    write_tokenizer(card.config, tmp_path, card.tokenizer)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert len(tokenizer) == card.config["vocab_size"]
    assert len(set(tokenizer.get_vocab().values())) == card.config["vocab_size"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (bos, eos)
    ids = tokenizer(TEXT)["input_ids"]
    assert (ids[0] == bos) == add_bos
    assert tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    for special_id in card.tokenizer["special_tokens"]:
        assert tokenizer.convert_ids_to_tokens(int(special_id)) == card.tokenizer["special_tokens"][special_id]


def test_tokenizer_is_deterministic(tmp_path: Path) -> None:
    card = load_card("mistral-7b")
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_tokenizer(card.config, tmp_path / sub, card.tokenizer)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


# -- architecture conventions, on toy-sized versions of the real cards -------------------------------------------


@pytest.mark.parametrize(
    "name", ["llama-3.2-1b", "qwen2.5-0.5b", "mistral-7b", "mixtral-8x7b", "gemma-2-9b", "phi-3-mini", "qwen3-8b",
             "deepseek-r1-distill-qwen-7b"]
)
def test_family_conventions(tmp_path: Path, name: str) -> None:
    card = shrunk(name)
    path = materialise(card, "float32", cache_dir=tmp_path)
    model = load(path)

    # Same tensor names and shapes as transformers' own save_pretrained would write.
    model.save_pretrained(tmp_path / "reference")
    with safe_open(tmp_path / "reference" / "model.safetensors", "pt") as f:
        reference = {k: tuple(f.get_slice(k).get_shape()) for k in list(f.keys())}
    assert {s.name: s.shape for s in tensor_plan(path)} == reference

    state = model.state_dict()
    with safe_open(path / "model.safetensors", "pt") as f:  # loaded as written, nothing re-initialised
        for key in list(f.keys()):
            if key in state:
                assert torch.equal(f.get_tensor(key), state[key]), key
    norms = [v for k, v in state.items() if k.endswith("norm.weight")]
    expected_norm = 0.0 if card.model_type == "gemma2" else 1.0  # gemma computes x * (1 + w)
    assert norms and all(torch.all(v == expected_norm) for v in norms)
    biases = [v for k, v in state.items() if k.endswith(".bias")]
    assert bool(biases) == (card.model_type == "qwen2")  # Qwen2: q/k/v biases
    assert all(torch.all(v == 0) for v in biases)
    if card.model_type == "mixtral":  # written in the published per-expert layout
        assert any(".block_sparse_moe.experts.3.w1.weight" in k for k in reference)

    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert len(tokenizer) == 1024
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes_load_and_round_from_float32(tmp_path: Path, tiny_dir: Path, dtype: str) -> None:
    path = materialise(load_card("tiny-llama"), dtype, cache_dir=tmp_path)
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == dtype
    model = load(path, getattr(torch, dtype))
    assert model.dtype == getattr(torch, dtype)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 5, 9, 300]])).logits).all()
    # Same random stream for every dtype: the half model is the float32 one rounded to nearest.
    with safe_open(tiny_dir / "model.safetensors", "pt") as full, safe_open(path / "model.safetensors", "pt") as half:
        name = "model.layers.1.mlp.down_proj.weight"
        assert torch.equal(full.get_tensor(name).to(getattr(torch, dtype)), half.get_tensor(name))


# -- determinism, caching, crash safety ---------------------------------------------------------------------------


def test_deterministic_bytes_and_seed_sensitivity(tmp_path: Path, tiny_dir: Path) -> None:
    card = load_card("tiny-llama")
    again = materialise(card, "float32", seed=0, cache_dir=tmp_path / "a")
    assert again != tiny_dir and weight_files(again) == weight_files(tiny_dir)
    assert (again / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    other = materialise(card, "float32", seed=1, cache_dir=tmp_path / "a")
    assert other != again and weight_files(other)["model.safetensors"] != weight_files(again)["model.safetensors"]
    assert read_marker(other)["seed"] == 1


def test_second_call_reuses_cache(tmp_path: Path) -> None:
    card = load_card("tiny-llama")
    calls: list[tuple[int, int]] = []
    first = materialise(card, "bf16", cache_dir=tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] == card.weight_bytes("bf16")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    calls.clear()
    second = materialise(card, "bfloat16", cache_dir=tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert second == first and not calls
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.name == cache_entry_name(card, "bf16", 0) and first.name.startswith("tiny-llama-bfloat16-seed0-")


def test_default_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAAL_BENCH_CACHE", str(tmp_path / "env-cache"))
    path = materialise(load_card("tiny-llama"), "bf16")
    assert path.parent == tmp_path / "env-cache"


def test_leftover_temp_dir_is_not_complete(tmp_path: Path, tiny_dir: Path) -> None:
    card = load_card("tiny-llama")
    name = cache_entry_name(card, "float32", 0)
    # A crashed build leaves a hidden temporary sibling, even one that happens to hold a marker.
    stale = tmp_path / f".{name}.tmp-12345-deadbeef"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    (stale / MARKER_NAME).write_text((tiny_dir / MARKER_NAME).read_text())
    # A final-looking directory without a marker (e.g. a copy interrupted by the user) is not trusted either.
    (tmp_path / name).mkdir()
    (tmp_path / name / "model.safetensors").write_bytes(b"\0" * 10)
    path = materialise(card, "float32", cache_dir=tmp_path)
    assert path == tmp_path / name
    assert weight_files(path) == weight_files(tiny_dir)
    assert not stale.exists()


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def crash(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt  # e.g. Ctrl-C halfway through the weights

    card = load_card("tiny-llama")
    with pytest.raises(KeyboardInterrupt):
        materialise(card, "float32", cache_dir=tmp_path, progress=crash)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert read_marker(materialise(card, "float32", cache_dir=tmp_path)) is not None


def test_concurrent_callers_build_once(tmp_path: Path) -> None:
    card = load_card("tiny-llama")
    builders: set[str] = set()
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        me = threading.current_thread().name
        try:
            path = materialise(card, "bf16", seed=7, cache_dir=tmp_path, progress=lambda d, t: builders.add(me))
            results.append(path)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, name=f"caller-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(builders) == 1 and len(set(results)) == 1 and len(results) == 3


def test_sharded_output(tmp_path: Path) -> None:
    card = load_card("tiny-llama")
    path = materialise(card, "float32", cache_dir=tmp_path, max_shard_bytes=4 * 2**20)
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == card.weight_bytes("float32")
    assert set(read_marker(path)["weight_files"]) == set(shards)
    load(path)
    assert inspect_local_model(path).parameter_count == card.parameter_count()


@pytest.mark.parametrize("name", ["llama-3.1-8b", "mixtral-8x7b", "gemma-2-9b", "qwen2.5-72b"])
def test_plan_of_big_cards_without_weights(tmp_path: Path, name: str) -> None:
    """The tensor plan (meta device, no memory) of a real-size card adds up to the analytic count."""
    card = load_card(name)
    (tmp_path / "config.json").write_text(json.dumps(card.config))
    plan = tensor_plan(tmp_path)
    assert sum(s.numel for s in plan) == card.parameter_count()
    assert len({s.name for s in plan}) == len(plan)


# -- resolve_model --------------------------------------------------------------------------------------------------


def test_resolve_card_and_identity(tmp_path: Path) -> None:
    card = load_card("tiny-llama")
    resolved = resolve_model("tiny-llama", None, "bf16", 3, tmp_path)
    assert resolved.synthetic and resolved.card == "tiny-llama" and resolved.dtype == "bfloat16"
    assert resolved.path.is_dir() and read_marker(resolved.path)["seed"] == 3
    assert resolved.parameter_count == card.parameter_count()
    assert resolved.weight_bytes == card.weight_bytes("bf16")
    assert resolved.identity["card"] == "tiny-llama" and resolved.identity["seed"] == 3
    assert resolved.identity["card_config_sha256"] == card.config_sha256()
    assert str(tmp_path) not in json.dumps(resolved.identity)
    # The same directory given by path keeps its synthetic identity.
    by_path = resolve_model(None, str(resolved.path), "bf16", 0, None)
    assert by_path.synthetic and by_path.identity == resolved.identity
    # Another cache (another machine) gives the same identity.
    assert resolve_model("tiny-llama", None, "bfloat16", 3, tmp_path / "elsewhere").identity == resolved.identity
    assert resolve_model("tiny-llama", None, "bf16", 4, tmp_path).identity != resolved.identity


def test_resolve_needs_exactly_one_source(tmp_path: Path) -> None:
    from bench.models import ModelError

    with pytest.raises(ModelError):
        resolve_model(None, None, "bf16", 0, tmp_path)
    with pytest.raises(ModelError):
        resolve_model("tiny-llama", str(tmp_path), "bf16", 0, tmp_path)


def test_no_hub_access_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path) -> None:
    """With the hub forced offline, the directory still loads (nothing is fetched)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", os.fspath(tmp_path / "empty-hf-home"))
    load(tiny_dir)
    transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)


@pytest.mark.parametrize("name", sorted(c.name for c in list_cards()))
def test_every_card_renders_conversations_with_its_chat_template(tmp_path: Path, name: str) -> None:
    """The template a card names is in its tokenizer_config.json, and a conversation's prompt built from the
    template's pieces in token ids is what the tokenizer renders from the messages (what a server does)."""
    from bench.models.chat_format import chat_format

    card = load_card(name)
    write_tokenizer(card.config, tmp_path, card.tokenizer)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    chat = chat_format(tokenizer, name)
    first = chat.bare_words if chat.trims else chat.words  # a trimming template keeps no leading space
    user, answer, follow = ([first[k], chat.words[k + 1]] for k in (0, 2, 4))
    messages = [{"role": "user", "content": tokenizer.decode(user)},
                {"role": "assistant", "content": tokenizer.decode(answer)},
                {"role": "user", "content": tokenizer.decode(follow)}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer.encode(text, add_special_tokens=False) == chat.prompt([(user, answer)], follow)
