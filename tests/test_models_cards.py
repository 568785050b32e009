"""Architecture cards: loading, and analytic sizes that must equal what transformers builds."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest

from bench.models import Card, UnknownCardError, card_names, load_card, normalise_dtype

EXPECTED_CARDS = {
    "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.3-70b",
    "qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b",
    "mistral-7b", "mixtral-8x7b", "gemma-2-9b", "phi-3-mini", "tiny-llama",
    "qwen3-8b", "deepseek-r1-distill-qwen-7b",
}  # fmt: skip

# Parameter counts as published on the model pages / reported by transformers for the real checkpoints.
PUBLISHED_COUNTS = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.3-70b": 70_553_706_496,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-14b": 14_770_033_664,
    "qwen2.5-32b": 32_763_876_352,
    "qwen2.5-72b": 72_706_203_648,
    "mistral-7b": 7_248_023_552,
    "mixtral-8x7b": 46_702_792_704,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini": 3_821_079_552,
    "qwen3-8b": 8_190_735_360,  # 8.2B, 6.95B without the embeddings (Qwen3's model card)
    "deepseek-r1-distill-qwen-7b": 7_615_616_512,  # Qwen2.5-Math-7B's architecture
}


def test_all_cards_present_and_well_formed() -> None:
    assert set(card_names()) == EXPECTED_CARDS
    for entry in resources.files("bench.models").joinpath("cards").iterdir():
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        assert entry.name == f"{data['name']}.json"
        assert {"name", "display_name", "hf_id", "license", "notes", "config"} <= set(data)
        config = data["config"]
        assert config["model_type"] and config["architectures"], entry.name
        # dtype is chosen when materialising; library versions are not part of the architecture
        assert not {"torch_dtype", "dtype", "transformers_version", "_name_or_path", "auto_map"} & set(config)
        assert (data["hf_id"] is None) == (data["name"] == "tiny-llama")
        for token_id in (data.get("tokenizer") or {}).get("special_tokens", {}):
            assert int(token_id) < config["vocab_size"]


def test_load_card_and_unknown_card_lists_known_names() -> None:
    card = load_card("llama-3.1-8b")
    assert isinstance(card, Card)
    assert card.hf_id == "meta-llama/Llama-3.1-8B"
    assert card.config["rope_scaling"]["rope_type"] == "llama3"
    with pytest.raises(UnknownCardError) as info:
        load_card("llama-9")
    assert isinstance(info.value, ValueError)
    assert "llama-9" in str(info.value) and "tiny-llama" in str(info.value) and "qwen2.5-7b" in str(info.value)


def test_cards_are_copies() -> None:
    load_card("tiny-llama").config["hidden_size"] = 1
    assert load_card("tiny-llama").config["hidden_size"] == 256


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("bf16", "bfloat16"), ("BF16", "bfloat16"), ("fp16", "float16"), ("half", "float16"), ("fp32", "float32"),
     ("float32", "float32"), ("torch.bfloat16", "bfloat16")],
)  # fmt: skip
def test_normalise_dtype(alias: str, canonical: str) -> None:
    assert normalise_dtype(alias) == canonical


def test_normalise_dtype_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="int4"):
        normalise_dtype("int4")


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_parameter_count_matches_published(name: str) -> None:
    assert load_card(name).parameter_count() == PUBLISHED_COUNTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_CARDS))
def test_parameter_count_matches_meta_model(name: str) -> None:
    """The analytic count equals the unique parameters of the model transformers builds (meta device)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    card = load_card(name)
    config = AutoConfig.for_model(**card.config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == card.config["architectures"][0]
    assert sum(p.numel() for p in model.parameters()) == card.parameter_count()


def test_weight_and_kv_bytes() -> None:
    card = load_card("llama-3.1-8b")
    assert card.weight_bytes("bf16") == 2 * card.parameter_count()
    assert card.weight_bytes("float32") == 4 * card.parameter_count()
    # 2 (K and V) x 32 layers x 8 kv heads x 128 head_dim x 2 bytes
    assert card.kv_cache_bytes_per_token("bfloat16") == 131_072
    # Gemma-2 sets head_dim (256) independently of hidden_size / heads (224)
    assert load_card("gemma-2-9b").kv_cache_bytes_per_token("bf16") == 2 * 42 * 8 * 256 * 2


def test_flops_per_token() -> None:
    dense = load_card("llama-3.1-8b")
    embedding = dense.config["vocab_size"] * dense.config["hidden_size"]
    # untied: lm_head is a matmul and counts; the input embedding is a lookup and does not
    assert dense.flops_per_token() == 2 * (dense.parameter_count() - embedding)
    assert dense.flops_per_token(context_len=1000) == dense.flops_per_token() + 4 * 32 * 32 * 128 * 1000

    tied = load_card("llama-3.2-1b")  # tied: the lm_head matmul still happens
    assert tied.flops_per_token() == 2 * tied.parameter_count()

    moe = load_card("mixtral-8x7b")  # only 2 of 8 experts run per token
    assert moe.active_parameter_count() == 12_879_925_248
    assert moe.flops_per_token() < 2 * moe.parameter_count() / 3


def test_importing_bench_models_does_not_import_torch() -> None:
    code = (
        "import sys, bench.models as m; m.list_cards()[0].parameter_count(); "
        "print(sorted(x for x in ('torch', 'transformers', 'tokenizers', 'safetensors') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
