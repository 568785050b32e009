"""The one JSON spelling that is hashed (cell ids, card and config identities), the same on every machine."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
