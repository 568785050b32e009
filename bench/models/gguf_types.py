"""GGUF quantisation types and KV-cache types that lokaal-bench knows: their names (as llama.cpp's
`llama-quantize` spells them), and the sizes planning needs without a file (fit, project, validate).

Pure Python: the profile validator and the planners import this without llama.cpp or numpy's help.
Sizes of a real file come from the file itself (bench/models/gguf_read.py); these are estimates.
"""

from __future__ import annotations

# llama.cpp's file types (LLAMA_FTYPE_MOSTLY_<name>) that its quantiser makes without an importance
# matrix. The IQ* types need one (calibration text through the model), which synthetic weights lack.
QUANTIZATION_TYPES: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0",
    "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K",
)

# Bits per weight, the whole model averaged, as llama.cpp's quantiser writes Llama-shaped models: block
# formats exactly (Q8_0: 34 bytes per 32 weights), mixed K formats approximately (Q4_K_M mixes Q4_K with
# Q6_K for attn_v, ffn_down and the output matrix: 5.18 measured on the llama-3.2-1b card, whose tied
# 128k-token embedding is Q6_K; nearer 4.9 on 7-8B models). Used only where no file exists yet: a
# materialised or local GGUF reports its own bytes.
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K_M": 5.75, "Q5_K_S": 5.55,
    "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 5.0, "Q4_K_S": 4.65, "Q4_1": 5.0, "Q4_0": 4.5, "Q3_K_L": 4.3,
    "Q3_K_M": 3.95, "Q3_K_S": 3.5, "Q2_K": 3.35,
}

# KV-cache element types (llama.cpp's --cache-type-k/-v) and their bytes per element:
# q8_0 stores 32 values in 34 bytes, q4_0 in 18.
KV_CACHE_TYPES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def normalise_quantization(name: str) -> str:
    """Q4_K_M from q4_k_m; ValueError naming the known types otherwise."""
    key = str(name).strip().upper()
    if key not in QUANTIZATION_TYPES:
        raise ValueError(f"unknown GGUF quantisation type {name!r}; known: {', '.join(QUANTIZATION_TYPES)}")
    return key


def weight_bytes_estimate(parameter_count: int, quantization: str) -> int:
    """What `parameter_count` weights take at `quantization`, before a file says exactly."""
    return int(parameter_count * BITS_PER_WEIGHT[normalise_quantization(quantization)] / 8)


def kv_bytes_per_element(cache_type: str) -> float:
    key = str(cache_type).strip().lower()
    if key not in KV_CACHE_TYPES:
        raise ValueError(f"unknown KV-cache type {cache_type!r}; known: {', '.join(KV_CACHE_TYPES)}")
    return KV_CACHE_TYPES[key]
