"""The optional C module `offchain/core/_native.c` (the frame tree's Keccak loops), or None
where it was not built: `pip install -e .` builds it where a C compiler
is present (`optional = true` in pyproject.toml, so an install without one goes on). Every user
keeps its Python loops for that case and for values off the C side's fixed layouts, which it
answers with None; tests/unit/test_native_merkle.py keeps both ways identical."""

from __future__ import annotations

from typing import Any

native: Any
try:
    from . import _native as native  # type: ignore[attr-defined,no-redef,unused-ignore]
except ImportError:  # pragma: no cover - no compiler at install time
    native = None

NATIVE: bool = native is not None  # whether the C loops run here

__all__ = ["NATIVE", "native"]
