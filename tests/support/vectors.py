"""The pg_sig test vectors kept in tests/data (see its README for where they come from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "signature-vectors.json"
SIGNATURE_VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
