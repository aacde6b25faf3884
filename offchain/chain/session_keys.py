"""What sealing session data needs from the chain (S5): formed sessions, and the secp256k1 public
key of every party, recovered from signatures the party already made to form the session.

A party's public key is never taken on anyone's word: it is recovered from a signature the
SigningSession contract accepted from that party (its proposal or its acceptance), and it must
hash to the party's address. Three ways a party speaks to the contract (docs/SIGNING.md):

* ``proposeWithSignature(p, sig)``: the initiator signed the Proposal, whose EIP-712 digest is the
  session id;
* ``respondWithSignature(id, accept, sig)``: the party signed ``responseDigest(id, accept)``;
* ``propose`` / ``respond`` sent by the party itself: the transaction's own signature (read with
  ``eth_getRawTransactionByHash``).

A formed session has every party's acceptance on chain, so every party's key is recoverable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account._utils.legacy_transactions import Transaction, vrs_from
from eth_account._utils.signing import hash_of_signed_transaction, to_standard_v
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_keys.datatypes import Signature
from hexbytes import HexBytes
from eth_utils.address import to_checksum_address
from web3 import Web3

from ..core.envelope import address_of
from .client import bind, call

__all__ = ["FormedSession", "SessionKeyError", "SessionReader", "recover_public_key", "transaction_public_key"]


class SessionKeyError(Exception):
    """A party's public key could not be recovered from the chain."""


@dataclass(frozen=True)
class FormedSession:
    session_id: bytes
    parties: tuple[str, ...]
    cameras: tuple[bytes, ...]
    start_ms: int
    end_ms: int
    formed_block: int


def recover_public_key(digest: bytes, signature: bytes) -> bytes:
    """The 64-byte public key behind a 65-byte ``r | s | v`` signature of ``digest``."""
    if len(signature) != 65:
        raise SessionKeyError(f"a signature is 65 bytes, not {len(signature)}")
    v = signature[64]
    sig = Signature(signature[:64] + bytes([v - 27 if v >= 27 else v]))
    return bytes(sig.recover_public_key_from_msg_hash(digest).to_bytes())


def transaction_public_key(raw: bytes) -> bytes:
    """The public key of the account that signed a raw (legacy or typed) transaction."""
    if raw and raw[0] <= 0x7F:
        typed = TypedTransaction.from_bytes(HexBytes(raw))
        msg_hash, (v, r, s) = typed.hash(), typed.vrs()
    else:
        legacy = Transaction.from_bytes(raw)
        msg_hash = hash_of_signed_transaction(legacy)
        v, r, s = vrs_from(legacy)
    sig = Signature(vrs=(to_standard_v(v), r, s))
    return bytes(sig.recover_public_key_from_msg_hash(msg_hash).to_bytes())


class SessionReader:
    """Reads SigningSession: sessions formed since a block, and their parties' public keys."""

    def __init__(self, w3: Web3, address: str):
        self.w3 = w3
        self.contract = bind(w3, "SigningSession", address)
        self.address = self.contract.address

    def formed_since(self, from_block: int, to_block: int) -> list[FormedSession]:
        out = []
        for entry in self.contract.events.SessionFormed().get_logs(from_block=from_block, to_block=to_block):
            sid = bytes(entry["args"]["sessionId"])
            info = call(self.contract.functions.session(sid))
            parties, cameras, _ = call(self.contract.functions.membersOf(sid))
            out.append(FormedSession(session_id=sid, parties=tuple(to_checksum_address(p) for p in parties),
                                     cameras=tuple(bytes(c) for c in cameras), start_ms=int(info[5]),
                                     end_ms=int(info[6]), formed_block=int(entry["blockNumber"])))
        return out

    def party_keys(self, session_id: bytes, from_block: int = 0) -> dict[str, bytes]:
        """address -> 64-byte public key, for every party whose acceptance is on chain."""
        found: dict[str, bytes] = {}
        events = self.contract.events
        logs = list(events.SessionProposed().get_logs(from_block=from_block,
                                                      argument_filters={"sessionId": session_id}))
        logs += list(events.SessionResponded().get_logs(from_block=from_block,
                                                        argument_filters={"sessionId": session_id}))
        for entry in logs:
            args = entry["args"]
            party = to_checksum_address(args["initiator"] if "initiator" in args else args["party"])
            if party in found or not args.get("accepted", True):
                continue
            pub = self._key_from_tx(entry["transactionHash"], session_id, party)
            if address_of(pub) != party:
                raise SessionKeyError(f"the key recovered for {party} is {address_of(pub)}'s")
            found[party] = pub
        return found

    def _key_from_tx(self, tx_hash: Any, session_id: bytes, party: str) -> bytes:
        tx = self.w3.eth.get_transaction(tx_hash)
        fn, args = self.contract.decode_function_input(tx["input"])
        name = fn.fn_name
        if name == "proposeWithSignature":
            return recover_public_key(session_id, bytes(args["signature"]))
        if name == "respondWithSignature":
            digest = bytes(call(self.contract.functions.responseDigest(session_id, bool(args["accept"]))))
            return recover_public_key(digest, bytes(args["signature"]))
        if name in ("propose", "respond") and to_checksum_address(tx["from"]) == party:
            raw = self.w3.provider.make_request("eth_getRawTransactionByHash", [Web3.to_hex(tx_hash)])  # type: ignore[arg-type]
            if not raw.get("result"):
                raise SessionKeyError(f"the chain does not serve raw transaction {Web3.to_hex(tx_hash)}")
            return transaction_public_key(bytes.fromhex(str(raw["result"])[2:]))
        raise SessionKeyError(f"{party}'s acceptance came through {name}: no signature of theirs to recover")
