"""Reverts as Python exceptions that name the contract's custom error.

Every custom error in the committed ABIs gets an exception class of the same name, derived from
`ContractRevert`, so callers write ``except reverts.BrokenChainLink`` or check ``exc.name``. The
selector table is built from contracts/artifacts/, so a new error needs no code here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ..paths import ARTIFACTS_DIR


class ContractRevert(Exception):
    """A transaction or call reverted. `name` is the custom error (or Error/Panic), `args` its
    decoded arguments by parameter name, `data` the raw revert data."""

    name = "ContractRevert"

    def __init__(self, name: str, args: dict[str, Any], data: bytes, context: str = ""):
        self.name = name
        self.args_by_name = args
        self.data = data
        self.context = context
        shown = ", ".join(f"{k}={_show(v)}" for k, v in args.items())
        super().__init__(f"{context + ': ' if context else ''}reverted with {name}({shown})")


class UnknownRevert(ContractRevert):
    """Revert data that matches no known error (or none at all)."""


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return repr(v)


def _canonical_type(param: dict[str, Any]) -> str:
    t = str(param["type"])
    if t.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){t[5:]}"
    return t


@lru_cache(maxsize=1)
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {
        keccak(b"Error(string)")[:4]: ("Error", ["string"], ["message"]),
        keccak(b"Panic(uint256)")[:4]: ("Panic", ["uint256"], ["code"]),
    }
    for path in sorted(ARTIFACTS_DIR.glob("*.json")):
        for item in json.loads(path.read_text())["abi"]:
            if item["type"] != "error":
                continue
            types = [_canonical_type(p) for p in item["inputs"]]
            names = [p["name"] or f"arg{i}" for i, p in enumerate(item["inputs"])]
            selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
            table[selector] = (item["name"], types, names)
    return table


_classes: dict[str, type[ContractRevert]] = {}


def error_class(name: str) -> type[ContractRevert]:
    """The exception class for a custom error name (created once, shared by all raisers)."""
    cls = _classes.get(name)
    if cls is None:
        cls = type(name, (ContractRevert,), {"__module__": __name__, "__doc__": f"Custom error {name}."})
        _classes[name] = cls
    return cls


def known_errors() -> list[str]:
    return sorted({entry[0] for entry in _error_table().values()})


def decode_revert(data: bytes | str | None, context: str = "") -> ContractRevert:
    """Turn revert data into the matching named exception (not raised)."""
    if isinstance(data, str):
        data = bytes.fromhex(data[2:] if data.startswith("0x") else data)
    data = data or b""
    entry = _error_table().get(data[:4]) if len(data) >= 4 else None
    if entry is None:
        return UnknownRevert("UnknownRevert", {"data": data}, data, context)
    name, types, names = entry
    try:
        values = abi_decode(types, data[4:])
    except Exception:  # malformed payload: still say which error it claims to be
        return error_class(name)(name, {"raw": data[4:]}, data, context)
    named = [to_checksum_address(v) if t == "address" else v for t, v in zip(types, values)]
    return error_class(name)(name, dict(zip(names, named)), data, context)


def __getattr__(name: str) -> type[ContractRevert]:
    # `reverts.BrokenChainLink` works for every error in the ABIs, and only for those.
    if name in known_errors():
        return error_class(name)
    raise AttributeError(name)
