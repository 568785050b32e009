"""A model of a profile: an architecture card (synthetic weights) or a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from bench.profile.strict import Strict


class ModelSpec(Strict):
    """One model: an architecture card (synthetic weights) or a local Hugging Face directory."""

    card: str | None = None
    path: str | None = None
    name: str | None = Field(None, description="display name; defaults to the card or directory name")
    seed: int = Field(0, description="seed of the synthetic weights (cards only)")
    allow_pickle: bool = Field(False, description="allow pickle weight files (.bin/.pt), which can run code")
    trust_remote_code: bool = Field(False, description="run the model directory's own Python code")
    code_sha256: dict[str, str] = Field(default_factory=dict, description="pins: code file -> SHA-256")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.card is None) == (self.path is None):
            raise ValueError("give exactly one of 'card' (an architecture card) or 'path' (a local directory)")
        if self.trust_remote_code and not self.code_sha256:
            raise ValueError("trust_remote_code needs 'code_sha256': the SHA-256 of every code file it may run")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self.card if self.card else Path(self.path or "").name

    def identity(self) -> dict[str, Any]:
        """What makes this model the same model on another machine (no machine paths)."""
        if self.card:
            return {"card": self.card, "seed": self.seed}
        return {"local": self.display_name}
