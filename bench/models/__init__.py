"""Models: architecture cards, synthetic materialisation, and local model directories.

Importing this package stays cheap (no torch, no transformers): those are imported inside the functions
that build or inspect weights. Nothing here contacts a model hub; loading is always local_files_only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.models.cards import (
    DTYPE_BYTES,
    Card,
    UnknownCardError,
    UnsupportedArchitectureError,
    card_names,
    list_cards,
    load_card,
    normalise_dtype,
)
from bench.models.local import (
    CorruptWeightsError,
    InvalidConfigError,
    LocalModel,
    MissingConfigError,
    MissingWeightsError,
    ModelError,
    ModelNotFoundError,
    PickleWeightsError,
    ShardIndexError,
    config_identity,
    inspect_local_model,
)
from bench.models.materialise import (
    MARKER_NAME,
    MATERIALISER_VERSION,
    Progress,
    default_cache_dir,
    materialise,
    read_marker,
)

__all__ = [
    "DTYPE_BYTES",
    "MARKER_NAME",
    "MATERIALISER_VERSION",
    "Card",
    "CorruptWeightsError",
    "InvalidConfigError",
    "LocalModel",
    "MissingConfigError",
    "MissingWeightsError",
    "ModelError",
    "ModelNotFoundError",
    "PickleWeightsError",
    "ResolvedModel",
    "ShardIndexError",
    "UnknownCardError",
    "UnsupportedArchitectureError",
    "card_names",
    "config_identity",
    "default_cache_dir",
    "inspect_local_model",
    "list_cards",
    "load_card",
    "materialise",
    "normalise_dtype",
    "read_marker",
    "resolve_model",
]

# What "auto" means for a synthetic model: the dtype the cards' models are published and served in.
_SYNTHETIC_AUTO_DTYPE = "bfloat16"


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load from `path`, with what identifies it across machines."""

    name: str
    path: Path
    synthetic: bool
    card: str | None
    dtype: str
    # Same dict on every machine for the same model: no paths, no hostnames.
    identity: dict[str, Any]
    parameter_count: int
    weight_bytes: int  # parameter_count x bytes per element of `dtype`: what the loaded weights occupy
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    # GGUF models (llama.cpp): the file's real tensor bytes by ggml type, and what a decode step reads.
    gguf: dict[str, Any] | None = field(default=None, repr=False)
    weights: str = "files"  # "dummy": no weight files; vLLM's dummy loader creates the weights

    @property
    def weights_note(self) -> str:
        """Where the loaded weights come from, as a cell records it."""
        if self.weights == "dummy":
            return "synthetic by vLLM's dummy loader"
        return "synthetic, written by lokaal-bench" if self.synthetic else "files of the local directory"


def resolve_model(
    card: str | None,
    path: str | None,
    dtype: str,
    seed: int,
    cache_dir: Path | None,
    allow_pickle: bool = False,
    progress: Progress | None = None,
    gguf: bool = False,
    quantization: str | None = None,
    weights: str = "files",
) -> ResolvedModel:
    """Either materialise a card with synthetic weights, or check a local model directory.

    Exactly one of `card` and `path` must be given. `dtype` may be "auto": the checkpoint's dtype for a
    local directory, bfloat16 for a card. `gguf` (llama.cpp): a GGUF file instead, at `quantization`
    (bench/models/gguf_resolve.py). `weights` "dummy" (cards only): a weightless directory for vLLM's
    dummy loader.
    """
    if (card is None) == (path is None):
        raise ModelError("give exactly one of a model card (--model) or a local model directory (--model-path)")
    if weights == "dummy" and card is None:
        raise ModelError(f"{path}: weights: dummy is for cards; a local directory's weights are its files")
    if gguf:
        from bench.models.gguf_resolve import resolve_gguf

        return resolve_gguf(card, path, quantization, seed, cache_dir, progress)
    if path is not None and str(path).lower().endswith(".gguf"):
        raise ModelError(f"{path}: a GGUF file runs on the llamacpp engine or a llama-server "
                         "(engine kind llamacpp, or openai with server kind llamacpp), not on this engine")
    if card is not None:
        the_card = load_card(card)
        dtype = _SYNTHETIC_AUTO_DTYPE if dtype == "auto" else normalise_dtype(dtype)
        directory = materialise(the_card, dtype, seed=seed, cache_dir=cache_dir, progress=progress, weights=weights)
        return _synthetic(
            the_card.name,
            directory,
            dtype,
            int(seed),
            the_card.config,
            the_card.parameter_count(),
            config_sha256=the_card.config_sha256(),
            version=MATERIALISER_VERSION,
            weights=weights,
        )

    local = inspect_local_model(Path(str(path)), allow_pickle=allow_pickle)
    dtype = _local_dtype(local.config) if dtype == "auto" else normalise_dtype(dtype)
    marker = read_marker(local.path)
    if marker is not None:  # a materialised directory passed by path: keep its synthetic identity
        count = int(marker.get("parameter_count") or local.parameter_count or 0)
        return _synthetic(
            str(marker.get("card")),
            local.path,
            dtype,
            int(marker.get("seed", 0)),
            local.config,
            count,
            config_sha256=str(marker.get("card_config_sha256")),
            version=str(marker.get("materialiser_version")),
        )
    count = _local_parameter_count(local)
    return ResolvedModel(
        name=local.name,
        path=local.path,
        synthetic=False,
        card=None,
        dtype=dtype,
        identity={"kind": "local", "name": local.name, "config_sha256": local.identity, "dtype": dtype},
        parameter_count=count,
        weight_bytes=count * DTYPE_BYTES[dtype],
        config=local.config,
    )


def _synthetic(
    card: str,
    directory: Path,
    dtype: str,
    seed: int,
    config: dict[str, Any],
    count: int,
    *,
    config_sha256: str,
    version: str,
    weights: str = "files",
) -> ResolvedModel:
    identity = {
        "kind": "synthetic",
        "card": card,
        "card_config_sha256": config_sha256,
        "seed": seed,
        "dtype": dtype,
        "materialiser_version": version,
    }
    if weights == "dummy":  # vLLM's random weights, not the seeded ones: another model
        identity = {**identity, "seed": None, "weights": "dummy"}
    return ResolvedModel(
        name=card,
        path=directory,
        synthetic=True,
        card=card,
        dtype=dtype,
        identity=identity,
        parameter_count=count,
        weight_bytes=count * DTYPE_BYTES[dtype],
        config=config,
        weights=weights,
    )


def _local_dtype(config: dict[str, Any]) -> str:
    declared = config.get("dtype") or config.get("torch_dtype") or "float32"  # transformers' default
    try:
        return normalise_dtype(str(declared))
    except ValueError:
        return "float32"


def _local_parameter_count(local: LocalModel) -> int:
    if local.parameter_count is not None:
        return local.parameter_count
    # Pickle checkpoints: count analytically when we know the architecture, else estimate from file size.
    try:
        return Card(local.name, local.name, None, "unknown", "", local.config).parameter_count()
    except (UnsupportedArchitectureError, KeyError, TypeError, ValueError):
        return local.weight_bytes // DTYPE_BYTES[_local_dtype(local.config)]
