"""A model's chat template as token ids: what comes before the first message, between a message and its
answer, and between an answer and the next message. A conversation's prompt is then built from the
ids of its messages and answers, so each turn's prompt begins with the previous turn's prompt and
answer token for token (what a prefix cache can reuse), unless the template itself rewrites the
history (DeepSeek-R1's drops earlier reasoning: `stable` says so).

The pieces come from rendering the template once around marker messages (the way a server renders
it) and encoding the text between the markers. Also here: the "word" tokens of the vocabulary, ids
whose text is a space and letters and that encode back to themselves, from which synthetic
messages are drawn: their text (sent on the chat route) tokenizes back to the same ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKERS = ("QZUSERAQZ", "QZANSWERBQZ", "QZUSERCQZ")
_WORD = re.compile(r"^ [A-Za-z]{2,}$")
_BARE_WORD = re.compile(r"^[A-Za-z]{2,}$")

Turn = tuple[list[int], list[int]]  # (a user message's ids, its answer's ids)


class ChatTemplateError(ValueError):
    """The model directory has no chat template, or one whose pieces cannot be told apart."""


@dataclass(frozen=True)
class ChatFormat:
    start: list[int]  # before the first user message
    generation: list[int]  # after the last user message: the prompt the answer follows
    before_answer: list[int]  # after a user message of the history, before its answer
    after_answer: list[int]  # after an answer, before the next user message
    words: tuple[int, ...]  # ids whose text is " word" and which encode back to themselves
    # Templates that trim each message (Llama 3, Gemma 2): a message must not begin with a space, so its
    # first id is one of these ("word", encoding back to itself) and the rendered text keeps every id.
    trims: bool = False
    bare_words: tuple[int, ...] = ()

    @property
    def stable(self) -> bool:
        """Each turn's prompt begins with the previous prompt and its answer."""
        return self.generation == self.before_answer

    def prompt(self, history: Sequence[Turn], user: list[int]) -> list[int]:
        """The prompt of a turn: the history's messages and answers, then the new message."""
        ids = list(self.start)
        for message, answer in history:
            ids += message + self.before_answer + answer + self.after_answer
        return ids + user + self.generation

    def overhead(self, turns: int) -> int:
        """Tokens the template adds to a prompt of `turns` earlier turns and one new message."""
        return len(self.start) + turns * (len(self.before_answer) + len(self.after_answer)) + len(self.generation)


def _pieces(tokenizer: Any, messages: list[dict[str, str]]) -> list[str]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    pieces: list[str] = []
    for marker in [m["content"] for m in messages]:
        if text.count(marker) != 1:
            raise ChatTemplateError("the chat template does not render each message once")
        before, text = text.split(marker)
        pieces.append(before)
    return [*pieces, text]


def word_tokens(tokenizer: Any, pattern: re.Pattern[str] = _WORD) -> tuple[int, ...]:
    """The vocabulary's word tokens (text ' ' + two or more letters; or, with _BARE_WORD, letters alone) that
    encode back to themselves."""
    vocabulary = tokenizer.get_vocab()
    candidates = sorted(vocabulary.values())
    texts = tokenizer.batch_decode([[i] for i in candidates])
    words = [(i, t) for i, t in zip(candidates, texts, strict=True) if pattern.match(t)]
    encoded = tokenizer([t for _, t in words], add_special_tokens=False)["input_ids"]
    return tuple(i for (i, _), ids in zip(words, encoded, strict=True) if ids == [i])


def chat_format(tokenizer: Any, source: str = "the tokenizer") -> ChatFormat:
    """The pieces of a tokenizer's chat template; ChatTemplateError when it has none or they cannot be found."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"{source} has no chat template: conversations are sent as chat messages, which a "
                                "template turns into the model's prompt (tokenizer_config.json's chat_template)")
    user_a, answer_b, user_c = MARKERS
    try:
        start, generation = _pieces(tokenizer, [{"role": "user", "content": user_a}])
        start_again, before_answer, after_answer, generation_again = _pieces(tokenizer, [
            {"role": "user", "content": user_a}, {"role": "assistant", "content": answer_b},
            {"role": "user", "content": user_c}])
    except ChatTemplateError:
        raise
    except Exception as exc:  # a template may raise anything (Jinja errors, its own raise_exception)
        raise ChatTemplateError(f"{source}'s chat template cannot render a conversation: {exc}") from None
    if start_again != start or generation_again != generation:
        raise ChatTemplateError(f"{source}'s chat template renders the first message differently with a history")

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False)) if text else []

    words = word_tokens(tokenizer)
    if not words:
        raise ChatTemplateError(f"{source}'s vocabulary has no word tokens to write synthetic messages with")
    padded = tokenizer.apply_chat_template([{"role": "user", "content": f" {user_a} "}], tokenize=False,
                                           add_generation_prompt=True)
    trims = f" {user_a}" not in padded
    bare = word_tokens(tokenizer, _BARE_WORD) if trims else ()
    if trims and not bare:
        raise ChatTemplateError(f"{source}'s template trims messages and its vocabulary has no bare word tokens")
    return ChatFormat(encode(start), encode(generation), encode(before_answer), encode(after_answer), words,
                      trims, bare)


def load_chat_format(model_dir: Path) -> tuple[ChatFormat, Any]:
    """The chat format of a model directory and its tokenizer (for encoding replayed text and answers)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ChatTemplateError(f"{model_dir} has no tokenizer to build conversations with: {exc}") from None
    return chat_format(tokenizer, str(model_dir)), tokenizer
