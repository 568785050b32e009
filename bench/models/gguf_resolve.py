"""Which GGUF file a llama.cpp cell runs, and what identifies it: a card written and quantised into the
cache (bench/models/gguf.py), or a local `.gguf` file checked (its header read in full, its size against
its tensors) and, when a type is asked for that it does not have, requantised into the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.models import ResolvedModel
from bench.models.cards import load_card
from bench.models.gguf_read import GgufFile, hf_config, read_gguf
from bench.models.gguf_types import normalise_quantization
from bench.models.local import ModelError
from bench.models.materialise import MATERIALISER_VERSION, Progress


def gguf_facts(info: GgufFile) -> dict[str, Any]:
    """What the roofline, fit and the result set keep about the file (no paths)."""
    return {"file_type": info.file_type, "architecture": info.architecture, "tensor_bytes": info.tensor_bytes,
            "bytes_by_type": info.bytes_by_type(), "decode_read_bytes": info.decode_read_bytes(),
            "file_bytes": info.file_size, "tensors": len(info.tensors), "gguf_version": info.version}


def _quantizer(info: GgufFile) -> str | None:
    if info.file_type == "F16" and info.metadata.get("lokaal_bench.synthetic"):
        return None  # written by lokaal-bench itself
    from bench.models.gguf import llama_cpp_version

    return f"llama-cpp-python {llama_cpp_version()}"


def resolve_gguf(card: str | None, path: str | None, quantization: str | None, seed: int, cache_dir: Path | None,
                 progress: Progress | None = None) -> ResolvedModel:
    from bench.models.gguf import GGUF_WRITER_VERSION, header_sha256, materialise_gguf, quantise_local, read_marker

    if card is not None:
        the_card = load_card(card)
        wanted = normalise_quantization(quantization or "F16")
        file = materialise_gguf(the_card, wanted, seed=seed, cache_dir=cache_dir, progress=progress)
        info = read_gguf(file)
        identity = {"kind": "synthetic", "card": the_card.name, "card_config_sha256": the_card.config_sha256(),
                    "seed": int(seed), "dtype": wanted, "format": "gguf", "materialiser_version": MATERIALISER_VERSION,
                    "gguf_writer_version": GGUF_WRITER_VERSION, "quantizer": _quantizer(info)}
        return ResolvedModel(the_card.name, file, True, the_card.name, wanted, identity, the_card.parameter_count(),
                             info.tensor_bytes, the_card.config, gguf_facts(info))

    source = Path(str(path)).expanduser()
    if source.is_dir():
        raise ModelError(f"{source}: a directory; the llamacpp engine takes a .gguf file (path: models/x.gguf)")
    info = read_gguf(source)
    file = source
    if quantization is not None and info.file_type != normalise_quantization(quantization):
        file = quantise_local(source, quantization, cache_dir)
        info = read_gguf(file)
    found = read_marker(info)
    if found and found.get("card"):  # a materialised GGUF passed by path keeps its synthetic identity
        identity = {"kind": "synthetic", "card": found["card"], "card_config_sha256": found.get("card_config_sha256"),
                    "seed": int(found.get("seed", 0)), "dtype": info.file_type, "format": "gguf",
                    "materialiser_version": found.get("materialiser_version"),
                    "gguf_writer_version": found.get("gguf_writer_version"), "quantizer": _quantizer(info)}
        try:
            config = load_card(str(found["card"])).config
        except ValueError:
            config = hf_config(info)
        return ResolvedModel(str(found["card"]), file, True, str(found["card"]), str(info.file_type), identity,
                             info.parameter_count, info.tensor_bytes, config, gguf_facts(info))
    identity = {"kind": "local", "format": "gguf", "name": source.stem, "header_sha256": header_sha256(source),
                "dtype": info.file_type, "requantized_from": None if file == source else read_gguf(source).file_type}
    return ResolvedModel(source.stem, file, False, None, str(info.file_type), identity, info.parameter_count,
                         info.tensor_bytes, hf_config(info), gguf_facts(info))
