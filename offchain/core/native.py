"""The optional C modules, or None where they were not built: `pip install -e .` builds them
where a C compiler is present (`optional = true` in pyproject.toml, so an install without one
goes on). Every user keeps its Python loops for that case (and, for the frame tree, for values
off the C side's fixed layouts, which it answers with None); tests/unit/test_native_merkle.py and
test_native_gather.py keep both ways identical.

- ``native`` (`_native.c`): the frame tree's Keccak loops;
- ``gather`` (`_gather.c`, linked with OpenSSL's libcrypto): evidence extraction's verified
  frame copy, SHA-256 and copy of a window of frames in one call, without the GIL."""

from __future__ import annotations

from typing import Any

native: Any
try:
    from . import _native as native  # type: ignore[attr-defined,no-redef,unused-ignore]
except ImportError:  # pragma: no cover - no compiler at install time
    native = None

gather: Any
try:
    from . import _gather as gather  # type: ignore[attr-defined,no-redef,unused-ignore]
except ImportError:  # pragma: no cover - no compiler or no OpenSSL headers at install time
    gather = None

NATIVE: bool = native is not None  # whether the C tree loops run here
GATHER: bool = gather is not None  # whether the C frame copy runs here

__all__ = ["GATHER", "NATIVE", "gather", "native"]
