"""Synthetic byte-level BPE tokenizers whose vocabulary matches a config's vocab_size exactly.

Real tokenizers cannot be downloaded here (air-gapped), and a benchmark only needs one that behaves like
the real thing: same vocabulary size (so the embedding and lm_head shapes line up and sampling covers the
whole vocabulary), special tokens at the config's ids, and realistic text -> token ratios. So we train a
small number of merges on built-in English/Dutch text (real-looking tokens, decent compression) and then
pad the vocabulary with programmatically generated merges (each new token is the concatenation of two
existing ones) until the size is exact. Byte-level BPE round-trips any text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.models.chat_templates import chat_template

# Cap on merges learnt from the sample text before synthetic padding. The sample is small, so the trainer
# stops earlier (about a thousand merges: every word of the sample becomes a token).
_TRAINED_MERGES = 3000

_SAMPLE_TEXT = """\
The quick brown fox jumps over the lazy dog. A benchmark measures throughput, latency, memory and energy
of a language model on the hardware an organisation already owns, without sending data anywhere.
Large language models predict the next token from the previous ones. Each token is a piece of a word,
a whole word, a number or a punctuation mark. The time to the first token depends on the prompt length;
the time per output token depends on memory bandwidth, because every weight is read once per step.
Results are written to a result set with the hardware, the software versions and the configuration,
so that another team can compare their numbers with ours and reproduce the run on their own servers.
In the public sector, data often may not leave the building: the models run on local servers.
Questions people ask: how many users can one server handle? What does a longer context cost? Which
quantisation keeps quality acceptable? How much power does the machine draw while it is generating?
def generate(model, prompt, max_new_tokens=128):
    tokens = tokenizer.encode(prompt)
    for step in range(max_new_tokens):
        logits = model(tokens)
        tokens.append(int(logits[-1].argmax()))
    return tokenizer.decode(tokens)
Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 4096 8192 2024 2025 3.14 99.9% 1,000,000.
De snelle bruine vos springt over de luie hond. Een benchmark meet de doorvoer, de vertraging, het
geheugengebruik en het energieverbruik van een taalmodel op de eigen hardware van een organisatie.
Gemeenten, provincies, waterschappen en ministeries willen weten welke modellen ze zelf kunnen draaien,
zonder dat gegevens het gebouw verlaten. Hoeveel gebruikers kan één server tegelijk bedienen? Wat kost
een langere context? Hoeveel stroom verbruikt de machine tijdens het genereren van tekst?
De resultaten worden vastgelegd met de hardware, de softwareversies en de instellingen, zodat een ander
team de metingen kan vergelijken en herhalen. Het kabinet, de Tweede Kamer en de rijksoverheid werken
aan beleid voor verantwoorde inzet van algoritmen en kunstmatige intelligentie in de publieke sector.
Belangrijke woorden: gegevens, beveiliging, privacy, openbaarheid, archief, burger, dienstverlening,
aanvraag, vergunning, besluit, bezwaar, subsidie, belasting, zorg, onderwijs, woningbouw, mobiliteit.
Speciale tekens: é è ë ï ö ü à ç ñ ß € £ ¥ © ® ° ± × ÷ — – … « » “ ” ‘ ’ • → ← ↑ ↓ ✓ 😀 中文 日本語 한국어.
"""


class TokenizerBuildError(ValueError):
    """The config cannot be given a tokenizer (e.g. a vocabulary too small for 256 bytes + specials)."""


def _special_tokens(config: dict[str, Any], hints: dict[str, Any]) -> tuple[dict[int, str], dict[str, str]]:
    """Special token texts by id, and the roles (bos/eos/pad) that point at them."""
    by_id: dict[int, str] = {int(k): str(v) for k, v in (hints.get("special_tokens") or {}).items()}
    generic = {"bos": "<s>", "eos": "</s>", "pad": "<pad>"}
    roles: dict[str, str] = {}
    for role in ("bos", "eos", "pad"):
        value = config.get(f"{role}_token_id")
        ids = value if isinstance(value, list) else [value]
        ids = [int(i) for i in ids if i is not None]
        for n, token_id in enumerate(ids):
            if token_id not in by_id:
                use_generic = n == 0 and generic[role] not in by_id.values()
                by_id[token_id] = generic[role] if use_generic else f"<|{role}_{token_id}|>"
            if n == 0:  # the first id of a list is the tokenizer's eos; the others stay plain specials
                roles[role] = by_id[token_id]
        named = hints.get(f"{role}_token")  # a tokenizer whose bos is not the config's (DeepSeek-R1 distills)
        if named in by_id.values():
            roles[role] = named
    return dict(sorted(by_id.items())), roles


def _trained_merges(n_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens (bytes first) and merges learnt from the sample text, deterministically."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + n_merges,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=alphabet,
        special_tokens=[],
    )
    tok.train_from_iterator(_SAMPLE_TEXT.splitlines(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # Byte tokens in byte order (stable ids whatever the trainer's internal order), then merges in rank order.
    # Two merges can produce the same token ("a"+"bc", "ab"+"c"): keep the token once, and every merge.
    tokens = list(dict.fromkeys(_byte_tokens() + [a + b for a, b in merges]))
    return tokens, merges  # type: ignore[return-value]


def _byte_tokens() -> list[str]:
    """The 256 byte-level symbols ordered by byte value (GPT-2's bytes_to_unicode)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def build_tokenizer_json(config: dict[str, Any], hints: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    """tokenizer.json text with exactly config["vocab_size"] tokens, and the special-token roles."""
    hints = hints or {}
    vocab_size = int(config["vocab_size"])
    specials, roles = _special_tokens(config, hints)
    if any(i >= vocab_size or i < 0 for i in specials):
        raise TokenizerBuildError(f"special token ids {sorted(specials)} do not fit vocab_size {vocab_size}")
    n_regular = vocab_size - len(specials)
    if n_regular < 256:
        raise TokenizerBuildError(f"vocab_size {vocab_size} leaves no room for the 256 byte tokens")

    tokens, merges = _trained_merges(min(_TRAINED_MERGES, n_regular - 256))
    tokens, merges = tokens[:n_regular], merges[: max(0, n_regular - 256)]
    _pad_with_synthetic_merges(tokens, merges, n_regular, reserved=set(specials.values()))

    # Lay out ids: specials where the config wants them, regular tokens fill the remaining ids in order.
    vocab: dict[str, int] = {}
    regular = iter(tokens)
    for token_id in range(vocab_size):
        vocab[specials[token_id] if token_id in specials else next(regular)] = token_id

    add_bos = bool(hints.get("add_bos_token", True)) and "bos" in roles
    data: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": text,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, text in specials.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": _post_processor(roles.get("bos"), vocab.get(roles.get("bos", ""), 0), add_bos),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [list(m) for m in merges],
        },
    }
    return json.dumps(data, ensure_ascii=False), roles


def _post_processor(bos: str | None, bos_id: int, add_bos: bool) -> dict[str, Any]:
    if not add_bos or bos is None:
        return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def _pad_with_synthetic_merges(
    tokens: list[str], merges: list[tuple[str, str]], target: int, reserved: set[str]
) -> None:
    """Append tokens made of two existing tokens (with their merge) until there are `target` tokens.

    Pairs are visited ring by ring (all (i, j) with max(i, j) == n) so the most frequent learnt pieces
    combine first: word starts ("Ġ...") on the left, word pieces on the right, giving plausible
    multi-piece words. Purely deterministic.
    """
    seen = set(tokens) | reserved
    while len(tokens) < target:
        learnt = tokens[256:]
        left = [t for t in learnt if t.startswith("Ġ")] + [t for t in learnt if not t.startswith("Ġ")]
        right = [t for t in learnt if not t.startswith("Ġ")] + [t for t in tokens[:256] if t.isalnum()]
        left = left or tokens[:256]
        before = len(tokens)
        for n in range(max(len(left), len(right))):
            ring = [(i, n) for i in range(n)] + [(n, j) for j in range(n + 1)]
            for i, j in ring:
                if i >= len(left) or j >= len(right):
                    continue
                candidate = left[i] + right[j]
                if candidate in seen:
                    continue
                seen.add(candidate)
                tokens.append(candidate)
                merges.append((left[i], right[j]))
                if len(tokens) == target:
                    return
        if len(tokens) == before:  # cannot happen with a non-empty pool, but never loop forever
            raise TokenizerBuildError("could not generate enough distinct tokens")


def write_tokenizer(config: dict[str, Any], out_dir: Path, hints: dict[str, Any] | None = None) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json for PreTrainedTokenizerFast."""
    hints = hints or {}
    text, roles = build_tokenizer_json(config, hints)
    out_dir = Path(out_dir)
    (out_dir / "tokenizer.json").write_text(text, encoding="utf-8")
    specials = json.loads(text)["added_tokens"]
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(hints.get("add_bos_token", True)) and "bos" in roles,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(config.get("max_position_embeddings", 2048)),
        "added_tokens_decoder": {
            str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in specials
        },
    }
    template = chat_template(hints.get("chat_template"))
    if template is not None:  # the chat-completions route renders conversations with it
        tok_config["chat_template"] = template
    special_map: dict[str, str] = {}
    for role in ("bos", "eos", "pad"):
        if role in roles:
            tok_config[f"{role}_token"] = roles[role]
            special_map[f"{role}_token"] = roles[role]
    contents = {t["content"] for t in specials}
    if config.get("model_type") in ("qwen2", "qwen3") and "<|endoftext|>" not in contents and "eos" in roles:
        # Qwen2's tokenizer class falls back to <|endoftext|> for pad and unk, which would add a token the
        # vocabulary does not have (DeepSeek-R1's distills name theirs differently): name the eos instead.
        for role in ("pad", "unk"):
            tok_config.setdefault(f"{role}_token", roles["eos"])
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
