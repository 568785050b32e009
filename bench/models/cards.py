"""Architecture cards: the published config.json of a model, plus analytic sizes.

Pure Python on purpose (no torch, no transformers): planning code (fit, roofline, the CLI's listings)
needs parameter counts, weight and KV-cache sizes without paying for a multi-second torch import.
The counts are exact — tests compare them with a meta-device model that transformers builds.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from bench.errors import BenchError
from bench.hashing import canonical_json

# Bytes per element for the dtypes we materialise and load.
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32",
    "float": "float32",
    "f32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "f16": "float16",
}

# model_type -> family rules used by the analytic counts. Gemma-style RMSNorms compute x * (1 + w).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "phi3")
_TIE_DEFAULT = {"gemma2": True}  # transformers' config default where the card does not say
ONE_PLUS_NORM_MODEL_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})


class UnknownCardError(BenchError, ValueError):
    """No card of that name; the message lists the known ones."""


class UnsupportedArchitectureError(BenchError, ValueError):
    """The analytic formulas do not cover this model_type."""


def normalise_dtype(dtype: str) -> str:
    """Canonical dtype name ("float32", "bfloat16", "float16") from a name or alias ("bf16", "torch.float16")."""
    key = str(dtype).strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        known = ", ".join([*DTYPE_BYTES, *_DTYPE_ALIASES])
        raise ValueError(f"unknown dtype {dtype!r}; use one of: {known}")
    return key



@dataclass(frozen=True)
class Card:
    name: str
    display_name: str
    hf_id: str | None
    license: str
    notes: str
    config: dict[str, Any]
    # Optional tokenizer hints for synthetic tokenizers: {"special_tokens": {id: text}, "add_bos_token": bool}.
    tokenizer: dict[str, Any] = field(default_factory=dict)

    # -- identity -------------------------------------------------------------------------------------------

    def config_sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.config).encode()).hexdigest()

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    # -- analytic sizes -------------------------------------------------------------------------------------

    def parameter_count(self) -> int:
        """Unique parameters as transformers builds them (tied embeddings counted once)."""
        d = _dims(self.config)
        return d.embed + d.layers * d.per_layer + d.final_norm + (0 if d.tied else d.lm_head)

    def active_parameter_count(self) -> int:
        """Parameters used per token: for MoE only the routed experts (top-k) count."""
        d = _dims(self.config)
        return d.embed + d.layers * d.per_layer_active + d.final_norm + (0 if d.tied else d.lm_head)

    def weight_bytes(self, dtype: str) -> int:
        return self.parameter_count() * DTYPE_BYTES[normalise_dtype(dtype)]

    def kv_cache_bytes_per_token(self, dtype: str) -> int:
        """K and V for one token across all layers, full-attention upper bound.

        Sliding-window layers (Gemma-2's local layers, Phi-3's window) stop growing past the window; this
        ignores that, so it is exact for contexts up to the window and an upper bound beyond.
        """
        d = _dims(self.config)
        return 2 * d.layers * d.kv_heads * d.head_dim * DTYPE_BYTES[normalise_dtype(dtype)]

    def flops_per_token(self, context_len: int = 0) -> int:
        """Approximate forward FLOPs for one token: 2 x (active non-embedding parameters).

        "Non-embedding" leaves out the input embedding (a table lookup, no multiply-adds) but keeps the
        output projection (lm_head), which is a real vocab x hidden matmul even when tied. Norms, biases
        and the router count as parameters (negligible). Activations, softmax and RoPE are ignored. With
        context_len > 0, the attention score and value matmuls over that many cached tokens are added
        (4 x layers x heads x head_dim x context_len); the default (0) is the pure weight-bound number.
        """
        d = _dims(self.config)
        non_embedding = d.layers * d.per_layer_active + d.final_norm + d.lm_head
        attention = 4 * d.layers * d.heads * d.head_dim * max(0, int(context_len))
        return 2 * non_embedding + attention

    def summary(self) -> dict[str, Any]:
        """Small JSON-able description for listings and result metadata."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "hf_id": self.hf_id,
            "license": self.license,
            "model_type": self.model_type,
            "parameter_count": self.parameter_count(),
            "active_parameter_count": self.active_parameter_count(),
            "config_sha256": self.config_sha256(),
        }


@dataclass(frozen=True)
class _Dims:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    embed: int
    lm_head: int
    per_layer: int
    per_layer_active: int
    final_norm: int


def _dims(cfg: dict[str, Any]) -> _Dims:
    mt = cfg.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"no analytic parameter count for model_type {mt!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    h, v, n_layers = int(cfg["hidden_size"]), int(cfg["vocab_size"]), int(cfg["num_hidden_layers"])
    inter = int(cfg["intermediate_size"])
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    hd = int(cfg.get("head_dim") or h // heads)
    tied = bool(cfg.get("tie_word_embeddings", _TIE_DEFAULT.get(mt, False)))
    q_out, kv_out = heads * hd, kv * hd

    # Attention: q, k, v (fused into qkv_proj for phi3: same count) and o.
    attn = h * q_out + 2 * h * kv_out + q_out * h
    if mt == "qwen2":  # Qwen2 always has q/k/v biases, never an o bias
        attn += q_out + 2 * kv_out
    elif cfg.get("attention_bias", False) and mt in ("llama", "gemma2", "qwen3"):
        attn += q_out + 2 * kv_out + h
    if mt == "qwen3":  # per-head RMSNorm on queries and keys (q_norm, k_norm)
        attn += 2 * hd

    mlp = 3 * h * inter  # gate, up (fused gate_up_proj for phi3: same count), down
    if mt == "llama" and cfg.get("mlp_bias", False):
        mlp += 2 * inter + h
    norms = (4 if mt == "gemma2" else 2) * h

    per_layer = per_layer_active = attn + mlp + norms
    if mt == "mixtral":
        experts, top_k = int(cfg["num_local_experts"]), int(cfg["num_experts_per_tok"])
        router = experts * h
        per_layer = attn + router + experts * mlp + norms
        per_layer_active = attn + router + top_k * mlp + norms

    return _Dims(
        layers=n_layers,
        heads=heads,
        kv_heads=kv,
        head_dim=hd,
        tied=tied,
        embed=v * h,
        lm_head=v * h,
        per_layer=per_layer,
        per_layer_active=per_layer_active,
        final_norm=h,
    )


# -- loading -------------------------------------------------------------------------------------------------


def _card_from_dict(data: dict[str, Any]) -> Card:
    return Card(
        name=data["name"],
        display_name=data.get("display_name", data["name"]),
        hf_id=data.get("hf_id"),
        license=data.get("license", "unknown"),
        notes=data.get("notes", ""),
        config=data["config"],
        tokenizer=data.get("tokenizer", {}),
    )


@cache
def _all_cards() -> dict[str, Card]:
    cards: dict[str, Card] = {}
    for entry in resources.files("bench.models").joinpath("cards").iterdir():
        if entry.name.endswith(".json"):
            card = _card_from_dict(json.loads(entry.read_text(encoding="utf-8")))
            cards[card.name] = card
    return dict(sorted(cards.items()))


def list_cards() -> list[Card]:
    # Deep copies: a caller editing card.config must not change what the next caller gets.
    return [copy.deepcopy(card) for card in _all_cards().values()]


def card_names() -> list[str]:
    return list(_all_cards())


def load_card(name: str) -> Card:
    cards = _all_cards()
    key = name.strip().lower()
    if key not in cards:
        raise UnknownCardError(f"unknown model card {name!r}; known cards: {', '.join(cards)}")
    return copy.deepcopy(cards[key])
