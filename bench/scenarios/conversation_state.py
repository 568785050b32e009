"""One conversation as it is sent: each turn's prompt is the whole history (earlier messages and the
answers the model gave) plus the new message, built in token ids with the model's chat template
(bench/models/chat_format.py) and, for the chat route, as the messages the server renders itself.

When a turn's prompt and its answer would outgrow the context, the oldest turns are dropped until it
fits; the turn records how many were dropped. A turn whose own message does not fit even without any
history is not sent: it is a failed request saying so (bench/scenarios/conversation.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.models.chat_format import ChatFormat
from bench.profile.conversations import ConversationPlan
from bench.profile.workloads import Request, TurnInfo


@dataclass
class HistoryTurn:
    user_ids: list[int]
    user_text: str
    answer_ids: list[int]
    answer_text: str


class TurnTooLong(ValueError):
    """A turn's message and answer do not fit the context even without history."""


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class ConversationState:
    plan: ConversationPlan
    chat: ChatFormat
    encode: Callable[[str], list[int]]  # text -> ids without special tokens
    decode: Callable[[list[int]], str]
    context_tokens: int | None  # prompt + answer must fit in this many positions
    seed: str  # the stream's seed: synthetic messages are drawn from it
    salt: list[int] = field(default_factory=list)  # ids that begin the first message (salted workloads)
    history: list[HistoryTurn] = field(default_factory=list)
    dropped: int = 0  # the oldest turns left out so far
    previous: list[int] | None = None  # the previous turn's prompt followed by its answer

    def _message(self, turn: int) -> tuple[list[int], str]:
        planned = self.plan.turns[turn]
        if planned.user_text is not None:
            ids = self.encode(planned.user_text)
        else:
            rng = random.Random(f"{self.seed}/{self.plan.index}/{turn}")
            ids = [rng.choice(self.chat.words) for _ in range(planned.user_tokens or 1)]
            if self.chat.trims:  # the template strips a message's leading space: begin with a bare word
                ids[0] = rng.choice(self.chat.bare_words)
        if turn == 0 and self.salt:
            ids = self.salt + ids
        return ids, self.decode(ids)

    def request(self, turn: int, think_time_s: float) -> Request:
        """The request of turn `turn` (0: the first message); TurnTooLong when it cannot fit."""
        planned = self.plan.turns[turn]
        user_ids, user_text = self._message(turn)
        self._user = (user_ids, user_text)
        kept = self.history[self.dropped:]
        prompt = self.chat.prompt([(h.user_ids, h.answer_ids) for h in kept], user_ids)
        while self.context_tokens is not None and len(prompt) + planned.output_tokens > self.context_tokens and kept:
            self.dropped += 1  # oldest first; once dropped, a turn stays out (the history only shortens at its head)
            kept = self.history[self.dropped:]
            prompt = self.chat.prompt([(h.user_ids, h.answer_ids) for h in kept], user_ids)
        if self.context_tokens is not None and len(prompt) + planned.output_tokens > self.context_tokens:
            raise TurnTooLong(f"conversation {self.plan.index} turn {turn}: its message ({len(prompt)} prompt tokens "
                              f"with the chat template) and answer ({planned.output_tokens}) do not fit the context "
                              f"of {self.context_tokens} tokens even without history")
        messages: list[dict[str, Any]] = []
        for h in kept:
            messages += [{"role": "user", "content": h.user_text}, {"role": "assistant", "content": h.answer_text}]
        messages.append({"role": "user", "content": user_text})
        history = common_prefix(prompt, self.previous) if self.previous is not None else 0
        info = TurnInfo(self.plan.index, turn, history, self.dropped, think_time_s)
        # (a salted conversation's salt sits inside every prompt, after the template's start: its hashes hold it)
        return Request(self.plan.first_request + turn, prompt, planned.output_tokens, messages=messages, turn=info)

    def answered(self, prompt_ids: list[int], answer_ids: list[int], answer_text: str) -> None:
        """The answer to the last request: it joins the history the next turn resends."""
        user_ids, user_text = self._user
        self.history.append(HistoryTurn(user_ids, user_text, answer_ids, answer_text))
        self.previous = prompt_ids + answer_ids
