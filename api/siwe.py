"""Sign-In with Ethereum (EIP-4361) messages: a strict parser, a builder, and the checks.

Pure (no clock: callers pass `now`). We parse the message ourselves instead of pinning the
`siwe`/`signinwithethereum` packages: both pin eth-account below the 0.14 this project uses, and
the grammar is small. The parser follows the EIP's ABNF line by line and rejects anything else:

    [scheme "://"] domain " wants you to sign in with your Ethereum account:" LF
    address LF                       (EIP-55 checksummed)
    LF
    [statement LF]
    LF
    "URI: " uri LF
    "Version: 1" LF
    "Chain ID: " chain-id LF
    "Nonce: " nonce LF               (at least 8 alphanumerics)
    "Issued At: " RFC 3339 date-time
    [LF "Expiration Time: " date-time]
    [LF "Not Before: " date-time]
    [LF "Request ID: " request-id]
    [LF "Resources:" *(LF "- " uri)]

The signature is EIP-191 `personal_sign` over the message's UTF-8 bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

MAX_MESSAGE_BYTES = 4096
MAX_RESOURCES = 16
HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"

_DOMAIN = re.compile(r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<domain>[A-Za-z0-9.\-_~%!$&'()*+,;=:@\[\]]+)$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^[A-Za-z0-9]{8,128}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_REQUEST_ID = re.compile(r"^[^\s]*$")


class SiweError(ValueError):
    """The message is malformed or fails a check; `code` is a stable problem type suffix."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    statement: str | None = None
    scheme: str | None = None
    version: str = "1"
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)

    def text(self) -> str:
        """The message exactly as the EIP lays it out (what the wallet signs)."""
        prefix = f"{self.scheme}://" if self.scheme else ""
        lines = [prefix + self.domain + HEADER_SUFFIX, self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        else:
            lines += [""]
        lines += [f"URI: {self.uri}", f"Version: {self.version}", f"Chain ID: {self.chain_id}",
                  f"Nonce: {self.nonce}", f"Issued At: {self.issued_at}"]
        for label, value in (("Expiration Time", self.expiration_time), ("Not Before", self.not_before),
                             ("Request ID", self.request_id)):
            if value is not None:
                lines.append(f"{label}: {value}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {r}" for r in self.resources]
        return "\n".join(lines)


def _timestamp(value: str, what: str) -> float:
    if not _DATETIME.match(value):
        raise SiweError("siwe-malformed", f"{what} is not an RFC 3339 date-time")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SiweError("siwe-malformed", f"{what} is not a valid date-time") from None


def _field(lines: list[str], i: int, label: str, pattern: re.Pattern[str] | None = None) -> str:
    if i >= len(lines) or not lines[i].startswith(label + ": "):
        raise SiweError("siwe-malformed", f"line {i + 1}: expected '{label}: ...'")
    value = lines[i][len(label) + 2:]
    if pattern is not None and not pattern.match(value):
        raise SiweError("siwe-malformed", f"{label} is malformed")
    return value


def _optional(lines: list[str], i: int, label: str, pattern: re.Pattern[str]) -> tuple[str | None, int]:
    if i < len(lines) and lines[i].startswith(label + ": "):
        return _field(lines, i, label, pattern), i + 1
    return None, i


def _header(lines: list[str]) -> tuple[str | None, str, str, str | None, int]:
    if len(lines) < 9 or not lines[0].endswith(HEADER_SUFFIX):
        raise SiweError("siwe-malformed", "not an EIP-4361 message")
    m = _DOMAIN.match(lines[0][: -len(HEADER_SUFFIX)])
    if m is None:
        raise SiweError("siwe-malformed", "the domain is malformed")
    address = lines[1]
    if not _ADDRESS.match(address) or not is_checksum_address(address):
        raise SiweError("siwe-malformed", "the address is not an EIP-55 checksummed address")
    if lines[2] != "":
        raise SiweError("siwe-malformed", "line 3 must be empty")
    if lines[3] == "":
        return m["scheme"], m["domain"], address, None, 4
    if lines[4] != "" or lines[3].startswith("URI: "):
        raise SiweError("siwe-malformed", "the statement must be one line followed by an empty line")
    return m["scheme"], m["domain"], address, lines[3], 5


def parse(message: str) -> SiweMessage:
    """Parse an EIP-4361 message strictly; raise SiweError on anything else."""
    if len(message.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise SiweError("siwe-malformed", f"the message exceeds {MAX_MESSAGE_BYTES} bytes")
    if "\r" in message:
        raise SiweError("siwe-malformed", "lines end with LF only")
    lines = message.split("\n")
    scheme, domain, address, statement, i = _header(lines)
    uri = _field(lines, i, "URI", _URI)
    version = _field(lines, i + 1, "Version")
    if version != "1":
        raise SiweError("siwe-malformed", "Version must be 1")
    chain_id = _field(lines, i + 2, "Chain ID", re.compile(r"^[1-9][0-9]{0,18}$"))
    nonce = _field(lines, i + 3, "Nonce", _NONCE)
    issued_at = _field(lines, i + 4, "Issued At")
    _timestamp(issued_at, "Issued At")
    i += 5
    expiration, i = _optional(lines, i, "Expiration Time", _DATETIME)
    not_before, i = _optional(lines, i, "Not Before", _DATETIME)
    request_id, i = _optional(lines, i, "Request ID", _REQUEST_ID)
    resources: list[str] = []
    if i < len(lines) and lines[i] == "Resources:":
        i += 1
        while i < len(lines) and lines[i].startswith("- "):
            if not _URI.match(lines[i][2:]) or len(resources) >= MAX_RESOURCES:
                raise SiweError("siwe-malformed", f"resources: at most {MAX_RESOURCES} URIs")
            resources.append(lines[i][2:])
            i += 1
    if i != len(lines):
        raise SiweError("siwe-malformed", f"line {i + 1}: unexpected content")
    return SiweMessage(domain=domain, address=address, uri=uri, chain_id=int(chain_id), nonce=nonce,
                       issued_at=issued_at, statement=statement, scheme=scheme, version=version,
                       expiration_time=expiration, not_before=not_before, request_id=request_id,
                       resources=tuple(resources))


def check(msg: SiweMessage, *, domain: str, chain_id: int, now: float, max_age_s: float = 600,
          skew_s: float = 60) -> None:
    """The server's checks: its own domain and chain, and the message's validity period
    (issued within `max_age_s`, not in the future beyond `skew_s`, not expired, not before)."""
    if msg.domain != domain:
        raise SiweError("siwe-domain", f"the message is for {msg.domain!r}, this server is {domain!r}")
    if msg.chain_id != chain_id:
        raise SiweError("siwe-chain", f"the message is for chain {msg.chain_id}, this consortium is {chain_id}")
    issued = _timestamp(msg.issued_at, "Issued At")
    if issued > now + skew_s:
        raise SiweError("siwe-not-yet-valid", "Issued At lies in the future")
    if issued < now - max_age_s:
        raise SiweError("siwe-expired", f"the message was issued more than {max_age_s:.0f} s ago")
    if msg.expiration_time is not None and _timestamp(msg.expiration_time, "Expiration Time") <= now:
        raise SiweError("siwe-expired", "the message has expired")
    if msg.not_before is not None and _timestamp(msg.not_before, "Not Before") > now + skew_s:
        raise SiweError("siwe-not-yet-valid", "the message is not valid yet")


def recover(message: str, signature: bytes) -> str:
    """The address that personal_signed `message`."""
    try:
        return Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception:  # noqa: BLE001 - eth-keys raises several types for bad r/s/v
        raise SiweError("invalid-signature", "the signature is malformed") from None


def sign(message: str, private_key: str) -> bytes:
    """personal_sign, as a wallet does (tests and the demo)."""
    return bytes(Account.sign_message(encode_defunct(text=message), private_key).signature)
