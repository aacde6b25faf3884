"""Seeded fault injector for the camera agent: what the network does to frames, per node.

Faults are applied by the camera to the packets it sends to each node, after signing, so the
node sees exactly what a bad network (or an attacker on the path) would produce:

==========  ===================================================================  ===============
kind        effect on the packet for that node                                   @parameter
==========  ===================================================================  ===============
cut         not sent; meant for spans where the camera reaches no node at all    (none)
            (use target ``*``); counted apart from ``drop``
drop        not sent (the node must detect it missing and repair it from peers)  (none)
corrupt     one payload byte flipped after signing → the node sees a SHA-256     (none)
            digest mismatch (I3)
truncate    payload cut short → declared length ≠ received length (I3)           bytes removed
                                                                                 (default: a
                                                                                 seeded 1..len)
duplicate   sent again right after itself                                        extra copies
                                                                                 (default 1)
reorder     held back and sent after the next k packets to that node              k (default 3)
delay       sent ms milliseconds late (later packets overtake it)                 ms (default 200)
==========  ===================================================================  ===============

Spec string (CLI ``--faults``)::

    spec     := rule (";" rule)*
    rule     := target ":" fault ("," fault)*
    target   := node name | "*"                    ("*" = every node, in addition to its own rules)
    fault    := kind "=" term ("+" term)*
    term     := selector ["@" parameter]
    selector := P                                  probability per frame, 0..1   e.g. 0.05
              | "seq:" A ["-" B]                   sequence numbers A..B, inclusive
              | ["t:"] A "-" B                     capture time [A, B) in ms after the first frame
                                                   of the stream (suffix "s" for seconds: 30s-35s)
              | "all"                              every frame

    node-bank:drop=0.05;node-customer:corrupt=0.02;*:cut=30000-35000
    node-a:drop=0.01+seq:100-119,reorder=0.02@4,delay=t:5s-6s@500;node-b:duplicate=seq:7

Dict form (JSON, or Python): ``{target: {kind: value}}`` where value is a probability, a term
string as above, a list of ``[A, B]`` time spans / term strings / rule dicts, or a rule dict
``{"p": 0.05, "seq": [[100, 119]], "t": [[30000, 35000]], "k"|"ms"|"n"|"bytes": parameter}``::

    {"node-bank": {"drop": 0.05}, "*": {"cut": [[30000, 35000]]},
     "node-a": {"reorder": {"p": 0.02, "k": 4}, "delay": "t:5000-6000@500"}}

Determinism: each decision is a pure function of (seed, node, kind, rule index, seq): a keyed
hash, not a shared random stream, so the same seed and spec give the same decisions whatever
the timing, reconnects or the order nodes are served in, and one node's faults never shift
another's. Several terms of one kind fire independently (the first that fires gives the
parameter); ``*`` rules come before a node's own. Faults apply in the order cut, drop, corrupt,
truncate, duplicate, reorder, delay; a frame that is cut or dropped gets no other fault.
Control messages (hello, end) are never faulted, nor are the agent's retransmissions after a
reconnect (the buffered original packets). `FaultInjector.counters` holds, per node, how
many frames were seen and how many of each fault were injected.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "FAULT_KINDS",
    "Decision",
    "Delivery",
    "FaultCounters",
    "FaultInjector",
    "FaultRule",
    "FaultSpec",
    "FaultSpecError",
]

FAULT_KINDS = ("cut", "drop", "corrupt", "truncate", "duplicate", "reorder", "delay")
# kind -> (parameter name, default, minimum); kinds absent take no parameter.
_PARAMS: dict[str, tuple[str, int | None, int]] = {
    "truncate": ("bytes", None, 1),
    "duplicate": ("n", 1, 1),
    "reorder": ("k", 3, 1),
    "delay": ("ms", 200, 0),
}
_PARAM_ALIASES = {"k", "ms", "n", "bytes", "param"}


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed or does not fit the agent's nodes."""


@dataclass(frozen=True)
class FaultRule:
    """One term: fires on a frame when its seq is in a seq span, its time in a time span, or a
    seeded draw falls under ``p``. Seq spans are inclusive, time spans half-open [a, b)."""

    kind: str
    p: float = 0.0
    seq: tuple[tuple[int, int], ...] = ()
    t: tuple[tuple[int, int], ...] = ()
    param: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if not (0.0 <= self.p <= 1.0) or math.isnan(self.p):
            raise FaultSpecError(f"{self.kind}: probability {self.p} is not within 0..1")
        if self.kind == "cut" and self.p not in (0.0, 1.0):
            raise FaultSpecError("cut takes time or seq spans, not a probability (use drop)")
        for a, b in self.seq:
            if a < 0 or b < a:
                raise FaultSpecError(f"{self.kind}: bad seq span {a}-{b}")
        for a, b in self.t:
            if a < 0 or b <= a:
                raise FaultSpecError(f"{self.kind}: bad time span {a}-{b} (want 0 <= A < B ms)")
        spec = _PARAMS.get(self.kind)
        if self.param is not None:
            if spec is None:
                raise FaultSpecError(f"{self.kind} takes no @parameter")
            if self.param < spec[2]:
                raise FaultSpecError(f"{self.kind}: {spec[0]} must be >= {spec[2]}")
        if not (self.p or self.seq or self.t):
            raise FaultSpecError(f"{self.kind}: empty rule (give a probability, seq: or time span)")

    @property
    def value(self) -> int | None:
        """The parameter in force (explicit or the kind's default)."""
        if self.param is not None:
            return self.param
        spec = _PARAMS.get(self.kind)
        return spec[1] if spec else None

    def in_span(self, seq: int, t_ms: int) -> bool:
        return any(a <= seq <= b for a, b in self.seq) or any(a <= t_ms < b for a, b in self.t)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.p:
            out["p"] = self.p
        if self.seq:
            out["seq"] = [list(s) for s in self.seq]
        if self.t:
            out["t"] = [list(s) for s in self.t]
        if self.param is not None:
            out[_PARAMS[self.kind][0]] = self.param
        return out

    def terms(self) -> list[str]:
        suffix = f"@{self.param}" if self.param is not None else ""
        out = []
        if self.p:
            out.append(("all" if self.p == 1.0 else repr(self.p)) + suffix)
        out += [f"seq:{a}" + (f"-{b}" if b != a else "") + suffix for a, b in self.seq]
        out += [f"{a}-{b}" + suffix for a, b in self.t]
        return out


def _ms(text: str) -> int:
    text = text.strip().lower()
    try:
        if text.endswith("ms"):
            return int(text[:-2])
        if text.endswith("s"):
            return round(float(text[:-1]) * 1000)
        return int(text)
    except ValueError as exc:
        raise FaultSpecError(f"bad time {text!r} (ms, or seconds with an 's' suffix)") from exc


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError as exc:
        raise FaultSpecError(f"bad {what} {text!r}") from exc


def _parse_term(kind: str, text: str) -> FaultRule:
    selector, at, param_text = text.strip().partition("@")
    selector = selector.strip().lower()
    param = _int(param_text, f"{kind} parameter") if at else None
    if selector in ("all", "*") or (not selector and at):
        return FaultRule(kind, p=1.0, param=param)
    try:
        return FaultRule(kind, p=float(selector), param=param)
    except ValueError:
        pass
    if selector.startswith("seq:"):
        a, dash, b = selector[4:].partition("-")
        lo = _int(a, "seq")
        return FaultRule(kind, seq=((lo, _int(b, "seq") if dash else lo),), param=param)
    if selector.startswith("t:") or "-" in selector:
        body = selector[2:] if selector.startswith("t:") else selector
        a, dash, b = body.partition("-")
        if not dash:
            raise FaultSpecError(f"{kind}: time span {text!r} needs A-B")
        return FaultRule(kind, t=((_ms(a), _ms(b)),), param=param)
    raise FaultSpecError(f"{kind}: cannot read {text!r} (probability, seq:A-B, A-B ms, or all)")


def _pairs(value: Any, what: str) -> tuple[tuple[int, int], ...]:
    if isinstance(value, int):
        return ((value, value),)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return ((int(value[0]), int(value[1])),)
    try:
        return tuple((int(a), int(b)) for a, b in value)
    except (TypeError, ValueError) as exc:
        raise FaultSpecError(f"{what}: expected [A, B] or a list of them, got {value!r}") from exc


def _rule_from_dict(kind: str, d: dict[str, Any]) -> FaultRule:
    unknown = set(d) - {"p", "seq", "t"} - _PARAM_ALIASES
    if unknown:
        raise FaultSpecError(f"{kind}: unknown keys {sorted(unknown)}")
    params = [d[k] for k in _PARAM_ALIASES if k in d]
    if len(params) > 1:
        raise FaultSpecError(f"{kind}: more than one parameter given")
    return FaultRule(
        kind,
        p=float(d.get("p", 0.0)),
        seq=_pairs(d["seq"], f"{kind} seq") if "seq" in d else (),
        t=_pairs(d["t"], f"{kind} t") if "t" in d else (),
        param=int(params[0]) if params else None,
    )


def _rules_from_value(kind: str, value: Any) -> list[FaultRule]:
    if isinstance(value, bool):
        return [FaultRule(kind, p=1.0)] if value else []
    if isinstance(value, (int, float)):
        return [FaultRule(kind, p=float(value))]
    if isinstance(value, str):
        return [_parse_term(kind, t) for t in value.split("+") if t.strip()]
    if isinstance(value, dict):
        return [_rule_from_dict(kind, value)]
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [FaultRule(kind, t=((int(value[0]), int(value[1])),))]
        rules: list[FaultRule] = []
        for item in value:
            if isinstance(item, (list, tuple)):
                rules.append(FaultRule(kind, t=_pairs(item, f"{kind} time span")))
            else:
                rules += _rules_from_value(kind, item)
        return rules
    raise FaultSpecError(f"{kind}: cannot read {value!r}")


@dataclass(frozen=True)
class FaultSpec:
    """Parsed faults: target ("*" or a node name) → rules, in the order given."""

    rules: dict[str, tuple[FaultRule, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """The string form; a text starting with "{" is read as the JSON dict form."""
        text = (text or "").strip()
        if text.startswith("{"):
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as exc:
                raise FaultSpecError(f"fault spec is not valid JSON: {exc}") from exc
        rules: dict[str, list[FaultRule]] = {}
        for chunk in text.split(";"):
            if not chunk.strip():
                continue
            target, colon, body = chunk.partition(":")
            target = target.strip()
            if not colon or not target or not body.strip():
                raise FaultSpecError(f"rule {chunk.strip()!r} is not target:kind=value[,kind=value]")
            for fault in body.split(","):
                kind, eq, value = fault.partition("=")
                kind = kind.strip().lower()
                if not eq or not value.strip():
                    raise FaultSpecError(f"fault {fault.strip()!r} in {target!r} is not kind=value")
                if kind not in FAULT_KINDS:
                    raise FaultSpecError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
                rules.setdefault(target, []).extend(_rules_from_value(kind, value))
        return cls({k: tuple(v) for k, v in rules.items()})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultSpec:
        if not isinstance(data, dict):
            raise FaultSpecError("fault spec dict must map target -> {kind: value}")
        rules: dict[str, list[FaultRule]] = {}
        for target, faults in data.items():
            if not isinstance(faults, dict):
                raise FaultSpecError(f"{target}: expected {{kind: value}}, got {faults!r}")
            for kind, value in faults.items():
                if kind not in FAULT_KINDS:
                    raise FaultSpecError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
                rules.setdefault(str(target), []).extend(_rules_from_value(kind, value))
        return cls({k: tuple(v) for k, v in rules.items()})

    @classmethod
    def coerce(cls, value: FaultSpec | str | dict[str, Any] | None) -> FaultSpec:
        if value is None:
            return cls()
        if isinstance(value, FaultSpec):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise FaultSpecError(f"cannot make a fault spec from {type(value).__name__}")

    def for_node(self, node: str) -> tuple[FaultRule, ...]:
        return self.rules.get("*", ()) + (self.rules.get(node, ()) if node != "*" else ())

    @property
    def targets(self) -> list[str]:
        return list(self.rules)

    def check_nodes(self, nodes: list[str] | set[str] | tuple[str, ...]) -> None:
        unknown = [t for t in self.rules if t != "*" and t not in nodes]
        if unknown:
            raise FaultSpecError(f"fault spec names unknown node(s) {unknown}; nodes are {sorted(nodes)}")

    def to_dict(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for target, rules in self.rules.items():
            for r in rules:
                out.setdefault(target, {}).setdefault(r.kind, []).append(r.to_dict())
        return out

    def __str__(self) -> str:
        parts = []
        for target, rules in self.rules.items():
            by_kind: dict[str, list[str]] = {}
            for r in rules:
                by_kind.setdefault(r.kind, []).extend(r.terms())
            parts.append(f"{target}:" + ",".join(f"{k}={'+'.join(v)}" for k, v in by_kind.items()))
        return ";".join(parts)

    def __bool__(self) -> bool:
        return any(self.rules.values())


@dataclass(frozen=True)
class Decision:
    """What happens to one frame on its way to one node."""

    cut: bool = False
    drop: bool = False
    corrupt: bool = False
    truncate: bool = False
    truncate_bytes: int | None = None
    duplicate: int = 0      # extra copies
    reorder: int = 0        # hold back by this many positions (0: not held)
    delay_ms: int = 0

    @property
    def delivered(self) -> bool:
        return not (self.cut or self.drop)


CLEAN = Decision()


class Delivery(NamedTuple):
    """One message to send to a node: the (possibly damaged) packet and how late to send it."""

    data: bytes
    seq: int
    delay_ms: int = 0


@dataclass
class FaultCounters:
    frames: int = 0       # frames offered to this node
    cut: int = 0
    dropped: int = 0
    corrupted: int = 0
    truncated: int = 0
    duplicated: int = 0   # extra copies sent
    reordered: int = 0
    delayed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _draw(seed: int | str, node: str, kind: str, index: int, seq: int, purpose: str = "fire") -> float:
    """Uniform [0, 1) from a keyed hash: a pure function of its arguments."""
    digest = hashlib.blake2b(f"{seed}\x1f{node}\x1f{kind}\x1f{index}\x1f{seq}\x1f{purpose}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class FaultInjector:
    """Applies a `FaultSpec` to the packets of one stream, per node, deterministically per seed.

    The agent calls `apply` once per frame and node, in seq order, then `flush` at the end of
    the stream (reorder holds packets back). `decide` is the pure decision, for tests and plans.
    """

    def __init__(self, spec: FaultSpec | str | dict[str, Any] | None = None, seed: int | str = 0) -> None:
        self.spec = FaultSpec.coerce(spec)
        self.seed = seed
        self.counters: dict[str, FaultCounters] = {}
        self._position: dict[str, int] = {}
        self._held: dict[str, list[tuple[int, Delivery]]] = {}
        self._rules: dict[str, tuple[tuple[int, FaultRule], ...]] = {}

    def __repr__(self) -> str:
        return f"FaultInjector({str(self.spec)!r}, seed={self.seed!r})"

    def check_nodes(self, nodes: list[str] | set[str] | tuple[str, ...]) -> None:
        self.spec.check_nodes(nodes)

    def _node_rules(self, node: str) -> tuple[tuple[int, FaultRule], ...]:
        rules = self._rules.get(node)
        if rules is None:
            rules = self._rules[node] = tuple(enumerate(self.spec.for_node(node)))
        return rules

    def _fires(self, node: str, index: int, rule: FaultRule, seq: int, t_ms: int) -> bool:
        if rule.in_span(seq, t_ms):
            return True
        if rule.p >= 1.0:
            return True
        return rule.p > 0.0 and _draw(self.seed, node, rule.kind, index, seq) < rule.p

    def decide(self, node: str, seq: int, t_ms: int) -> Decision:
        """Which faults hit frame ``seq`` (captured ``t_ms`` after the stream start) for ``node``."""
        rules = self._node_rules(node)
        if not rules:
            return CLEAN
        fired: dict[str, FaultRule] = {}
        for index, rule in rules:
            if rule.kind not in fired and self._fires(node, index, rule, seq, t_ms):
                fired[rule.kind] = rule
        if not fired:
            return CLEAN
        if "cut" in fired:
            return Decision(cut=True)
        if "drop" in fired:
            return Decision(drop=True)
        return Decision(
            corrupt="corrupt" in fired,
            truncate="truncate" in fired,
            truncate_bytes=fired["truncate"].param if "truncate" in fired else None,
            duplicate=int(fired["duplicate"].value or 0) if "duplicate" in fired else 0,
            reorder=int(fired["reorder"].value or 0) if "reorder" in fired else 0,
            delay_ms=int(fired["delay"].value or 0) if "delay" in fired else 0,
        )

    def apply(self, node: str, seq: int, t_ms: int, packet: bytes, payload_len: int) -> list[Delivery]:
        """The messages to send to ``node`` for this frame (possibly none, possibly earlier held
        ones released). ``payload_len`` is the frame's size: the payload is the packet's tail."""
        counters = self.counters.get(node)
        if counters is None:
            counters = self.counters[node] = FaultCounters()
            self._position[node] = 0
            self._held[node] = []
        counters.frames += 1
        decision = self.decide(node, seq, t_ms)
        if decision is CLEAN and not self._held[node]:
            return [Delivery(packet, seq)]
        if decision.cut:
            counters.cut += 1
            return []
        if decision.drop:
            counters.dropped += 1
            return []
        data = packet
        payload_start = len(packet) - payload_len
        if decision.corrupt and payload_len > 0:
            pos = payload_start + int(_draw(self.seed, node, "corrupt", 0, seq, "pos") * payload_len)
            mask = 1 + int(_draw(self.seed, node, "corrupt", 0, seq, "mask") * 255)
            damaged = bytearray(data)
            damaged[pos] ^= mask
            data = bytes(damaged)
            counters.corrupted += 1
        if decision.truncate and payload_len > 0:
            cut = decision.truncate_bytes or 1 + int(_draw(self.seed, node, "truncate", 0, seq, "bytes") * payload_len)
            data = data[: len(data) - min(cut, payload_len)]
            counters.truncated += 1
        copies = 1 + decision.duplicate
        counters.duplicated += decision.duplicate
        if decision.delay_ms:
            counters.delayed += 1
        items = [Delivery(data, seq, decision.delay_ms)] * copies
        if decision.reorder:
            counters.reordered += 1
            held = self._held[node]
            held.extend((self._position[node] + decision.reorder, d) for d in items)
            return []
        self._position[node] += 1
        return items + self._release(node)

    def _release(self, node: str) -> list[Delivery]:
        held = self._held[node]
        if not held:
            return []
        position = self._position[node]
        due = [d for at, d in held if at <= position]
        if due:
            self._held[node] = [(at, d) for at, d in held if at > position]
        return due

    def flush(self, node: str) -> list[Delivery]:
        """At the end of the stream: every packet still held back by reorder, in order."""
        held = self._held.get(node, [])
        self._held[node] = []
        return [d for _, d in sorted(held, key=lambda item: item[0])]

    def stats(self) -> dict[str, dict[str, int]]:
        return {node: c.as_dict() for node, c in self.counters.items()}
