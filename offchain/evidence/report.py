"""The evidence verification report: stable status codes, per-block and per-gap entries, a verdict.

Pure code, no I/O. Extraction (`extract.py`), bundle verification (`bundle.py`) and the independent
JavaScript verifier (`scripts/verify_bundle.js`) all speak this vocabulary, so a program can test a
code rather than parse a sentence.

Why codes in the style of C2PA validation status codes: a verifier's answer is consumed by other
programs (a signing app refusing to sign, a court bundle checker), and those need identifiers that
never change meaning, e.g. ``frame.digest.mismatch`` or ``block.not_final``. Every code has one
fixed severity:

* ``success``   something was checked and holds (``block.header.match``);
* ``failure``   the evidence cannot be relied on as presented (``frame.digest.mismatch``);
* ``untrusted`` the verifier has no trusted consortium deployment for this chain, so whatever it
                checked was checked against a ledger nobody vouched for (``bundle.contract.untrusted``);
* ``unchecked`` this verifier could not bind something a person is shown to anchored bytes (the
                JavaScript verifier cannot decode pictures: ``clip.pictures.unchecked``);
* ``gap``       the evidence is sound but incomplete, and the incompleteness is on record
                (``gap.declared``: anchored in the manifest; ``range.uncovered``: no block anchored);
* ``warning``   worth a human's attention, does not change the verdict (``block.disputed``);
* ``info``      how the output was made (``clip.reencoded``).

The verdict follows from severities alone, in this order (fail closed: a verdict that cannot be
established is never ``verified``): any failure → ``failed``; else any untrusted → ``untrusted``;
else any unchecked → ``partially_verified``; else any gap → ``verified_with_declared_gaps``; else
``verified``. Each verdict has a stable exit code (:data:`EXIT_CODES`). The JavaScript verifier
carries the same table (kept equal by a test).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Iterable

from ..tables import render_table

__all__ = [
    "CODES",
    "EXIT_CODES",
    "SEVERITIES",
    "VERDICTS",
    "Verdict",
    "BlockEntry",
    "ClipEntry",
    "Finding",
    "GapEntry",
    "Report",
    "severity_of",
]

REPORT_FORMAT = "frameledger.evidence-report/1"
SEVERITIES = ("failure", "untrusted", "unchecked", "gap", "warning", "info", "success")


class Verdict(str, Enum):
    """The answer, with its stable exit code (documented in docs/EVIDENCE.md)."""

    VERIFIED = "verified"
    VERIFIED_WITH_DECLARED_GAPS = "verified_with_declared_gaps"
    FAILED = "failed"
    UNTRUSTED = "untrusted"
    PARTIALLY_VERIFIED = "partially_verified"


VERDICTS = tuple(v.value for v in Verdict)
# Exit codes of `frameledger verify|extract` and `scripts/verify_bundle.js`; 2 is unusable input.
EXIT_CODES: dict[str, int] = {"verified": 0, "failed": 1, "verified_with_declared_gaps": 3, "untrusted": 4,
                              "partially_verified": 5}
EXIT_USAGE = 2

# code -> (severity, meaning). Never change a code's meaning or severity; add new codes instead.
CODES: dict[str, tuple[str, str]] = {
    # -- success
    "block.header.match": ("success", "the header hashes to the block hash anchored at its height"),
    "block.final": ("success", "a quorum of consortium nodes attested the block"),
    "manifest.digest.match": ("success", "the manifest's SHA-256 is the digest anchored in the header"),
    "block.root.match": ("success", "the manifest's frames rebuild the anchored Merkle root and frame count"),
    "frame.proof.valid": ("success", "the frames' multiproof verifies against the anchored root, on chain"),
    "frame.digest.match": ("success", "every presented frame's bytes hash to the anchored digest"),
    "clip.packets.match": ("success", "the clip's packets are the anchored frames, byte for byte, in order and on time"),
    "clip.pictures.match": ("success", "every picture of a re-encoded clip matches the decoded anchored frame it stands for"),
    # -- failure
    "bundle.invalid": ("failure", "the bundle cannot be read or its index is malformed"),
    "bundle.contract.mismatch": ("failure", "the bundle names a ledger contract other than the one the verifier trusts"),
    "chain.unavailable": ("failure", "the chain could not be queried"),
    "chain.id.mismatch": ("failure", "the chain answering is not the chain the evidence was anchored on"),
    "camera.unknown": ("failure", "the camera is not registered on this ledger"),
    "range.invalid": ("failure", "the requested time range is empty or malformed"),
    "range.empty": ("failure", "no anchored block covers any part of the requested range"),
    "block.missing": ("failure", "a block the chain holds for the range is absent from the evidence"),
    "block.root.unanchored": ("failure", "no block is anchored at the height the evidence relies on"),
    "block.header.mismatch": ("failure", "the header presented is not the header anchored at that height"),
    "block.chain.broken": ("failure", "a block does not link to the hash of the block before it"),
    "block.not_final": ("failure", "the block has not been attested by a quorum of nodes"),
    "block.root.mismatch": ("failure", "the manifest's frames do not rebuild the anchored root or frame count"),
    "tx.anchor.mismatch": ("failure", "the anchoring transaction named is not the one that anchored the block"),
    "tx.attest.mismatch": ("failure", "the attestation transactions named are not the block's attestations"),
    "manifest.missing": ("failure", "the block's manifest could not be found"),
    "manifest.digest.mismatch": ("failure", "the manifest's SHA-256 is not the digest anchored in the header"),
    "manifest.order.invalid": ("failure", "the manifest presented for this block is another block's manifest"),
    "manifest.header.mismatch": ("failure", "the manifest contradicts its header (camera, height, window)"),
    "manifest.invalid": ("failure", "the manifest is not a well-formed frameledger manifest"),
    "frame.missing": ("failure", "an anchored frame in the range is not presented"),
    "frame.digest.mismatch": ("failure", "a frame's bytes do not hash to the anchored digest"),
    "frame.order.invalid": ("failure", "frames are presented out of order (bytes of another anchored frame at this place)"),
    "frame.unknown": ("failure", "a presented frame is not listed in its block's manifest"),
    "frame.proof.invalid": ("failure", "the multiproof is absent, malformed or does not verify against the anchored root"),
    "clip.invalid": ("failure", "a clip is missing or cannot be demuxed"),
    "clip.undecodable": ("failure", "a clip does not decode end to end"),
    "clip.timing.mismatch": ("failure", "a clip's presentation times differ from the anchored capture times"),
    "clip.audio.mismatch": ("failure", "a clip's audio track does not hold exactly the anchored audio packets it "
                                       "lists"),
    "gap.undeclared": ("failure", "sequence numbers are missing without a gap declared in the manifest"),
    "camera.outage.signature.invalid": ("failure", "an outage declaration in an anchored manifest is not signed by "
                                                   "any device key the chain set for the camera"),
    "camera.outage.invalid": ("failure", "an outage declaration in an anchored manifest is malformed, another "
                                         "camera's, or outside its block's window"),
    "bundle.member.unsafe": ("failure", "a member name is absolute, contains `..` or a backslash, or escapes the bundle"),
    "bundle.member.duplicate": ("failure", "two members of the zip share a name"),
    "bundle.member.oversize": ("failure", "a member is larger than the limit for its kind"),
    "bundle.entry.duplicate": ("failure", "a block, clip, raw frame or codec source is listed twice in the index"),
    "clip.codec.mismatch": ("failure", "a remuxed clip's codec configuration (avcC parameter sets) is not the one "
                                       "anchored in the manifest"),
    "clip.pictures.mismatch": ("failure", "a picture of a re-encoded clip differs from the decoded anchored frame it "
                                          "stands for"),
    # -- batch mode (docs/EVIDENCE.md "Batch mode")
    "batch.manifest.missing": ("failure", "a batch the chain holds for the range (or before it, for the chain rule) "
                                          "has no batch manifest in the evidence"),
    "batch.manifest.invalid": ("failure", "a batch manifest is not a canonical frameledger.batch/1 document"),
    "batch.root.mismatch": ("failure", "a batch manifest's headers do not rebuild the anchored batch root"),
    "batch.manifest.mismatch": ("failure", "a batch manifest's SHA-256 or block count is not the anchored batch's"),
    "batch.chain.broken": ("failure", "the camera's blocks across batches do not form its hash chain (prevHash, "
                                      "height + 1, continuous time, link to the previous block)"),
    "batch.camera.duplicate": ("failure", "a batch holds a second header for the camera"),
    "batch.header.invalid": ("failure", "the camera's header in a batch breaks a header rule (window, frames root)"),
    "bundle.anchoring.mismatch": ("failure", "the bundle's anchoring mode (header or batch) is not the one the trusted "
                                             "deployment's chain records for the camera and range"),
    # -- untrusted
    "bundle.contract.untrusted": ("untrusted", "no trusted consortium deployment is configured for this chain; checked "
                                               "only against the ledger the bundle names"),
    # -- unchecked
    "clip.pictures.unchecked": ("unchecked", "this verifier cannot decode video, so the pictures of a re-encoded clip "
                                             "are not bound to anchored bytes"),
    # -- gap
    "gap.declared": ("gap", "frames no node could produce; declared in the anchored manifest"),
    "gap.keyframe_lost": ("gap", "the declared gap lost a keyframe; following frames cannot be decoded until the next one"),
    "gap.substituted": ("gap", "the gap is filled with another camera's frames, shown separately and marked"),
    "range.uncovered": ("gap", "part of the range has no anchored block"),
    "camera.outage.declared": ("gap", "the camera declared (signed by its device key) that it was lost from one "
                                      "capture time to another; the time jump in its frames is that outage"),
    "stream.unended": ("gap", "the camera's stream stopped without a signed end in this block; frames after its last one "
                              "may be missing (declared, not hidden)"),
    # -- warning
    "block.disputed": ("warning", "at least one node disputed the block"),
    "store.block.corrupt": ("warning", "a store held a corrupt copy; an intact copy came from another store"),
    "frame.not_playable": ("warning", "verified frames that cannot be decoded (no keyframe since a gap); kept as raw bytes"),
    "clip.reencode.failed": ("warning", "a substituted span could not be re-encoded; its frames are kept as raw bytes"),
    "clip.decoder.limited": ("warning", "(--probe) this machine's decoder could not decode a byte-exact clip from its "
                                        "keyframe; a decoder limitation, not a failure of the evidence"),
    # -- info
    "clip.reencoded": ("info", "the clip was re-encoded (substituted span); its original bytes are in the bundle"),
    "clip.preroll": ("info", "the clip starts at the keyframe before the range or ends after it, so it decodes"),
    "track.audio": ("info", "the camera's audio packets, verified against the anchored roots like its frames; carried "
                            "raw and, where an MP4 can hold the codec, in the clip's audio track"),
}


def severity_of(code: str) -> str:
    try:
        return CODES[code][0]
    except KeyError:
        raise ValueError(f"unknown status code {code!r}") from None


@dataclass(frozen=True)
class Finding:
    """One status code raised about one thing. ``height``/``seq`` locate it when it is about a
    block or a frame; ``camera`` is set for frames of a substitute camera."""

    code: str
    message: str = ""
    height: int | None = None
    seq: int | None = None
    camera: str | None = None
    count: int = 1

    def __post_init__(self) -> None:
        severity_of(self.code)  # an unknown code is a programming error: fail loudly in tests

    @property
    def severity(self) -> str:
        return severity_of(self.code)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "severity": self.severity, "message": self.message}
        for k in ("height", "seq", "camera"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.count != 1:
            out["count"] = self.count
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Finding":
        return cls(d["code"], d.get("message", ""), d.get("height"), d.get("seq"), d.get("camera"), int(d.get("count", 1)))


@dataclass
class BlockEntry:
    """What the report says about one anchored block."""

    height: int
    block_hash: str | None = None
    window_start_ms: int | None = None
    window_end_ms: int | None = None
    frame_count: int | None = None
    frames_root: str | None = None
    manifest_cid: str | None = None
    anchor_tx: str | None = None
    attest_txs: list[str] = field(default_factory=list)
    attestations: int | None = None
    disputes: int | None = None
    finalized: bool | None = None
    frames_presented: int = 0
    context_only: bool = False  # loaded only for the keyframe before the range
    codes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GapEntry:
    """A span of the range without the camera's own frames: declared in a manifest, or not
    covered by any anchored block."""

    kind: str  # "declared" | "substituted" | "uncovered" | "outage" (declared by the camera, signed)
    from_ms: int
    to_ms: int
    height: int | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    keyframe_lost: bool = False
    substitute_camera: str | None = None
    substitute_frames: int = 0
    not_playable_frames: int = 0
    after_seq: int | None = None  # outage: the last frame before it (numbering goes on after it)
    reason: str | None = None     # outage: why, in the camera's words

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClipEntry:
    """One output video file."""

    path: str
    kind: str  # "original" | "substituted"
    camera: str
    frames: int
    start_ms: int | None = None
    end_ms: int | None = None
    reencoded: bool = False
    why: str = "remux"  # "remux" (byte-exact packets) or why the clip had to be re-encoded
    decoded_frames: int | None = None  # set when the clip was decoded end to end (extract --probe)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}Z"


def _short(h: str | None, n: int = 10) -> str:
    if not h:
        return "-"
    return h[: n + 2] + "…" if len(h) > n + 2 else h


@dataclass
class Report:
    """The whole answer to "is this the camera's anchored video for that range?"."""

    camera_id: str | None = None
    camera_ip: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    chain_id: int | None = None
    ledger: str | None = None
    consortium: str | None = None
    produced_by: str = "frameledger"
    blocks: list[BlockEntry] = field(default_factory=list)
    gaps: list[GapEntry] = field(default_factory=list)
    clips: list[ClipEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    tracks: dict[str, int] = field(default_factory=dict)  # frames presented per track ("video", "audio")

    # -- building
    def add(self, code: str, message: str = "", *, height: int | None = None, seq: int | None = None,
            camera: str | None = None, count: int = 1) -> Finding:
        f = Finding(code, message, height, seq, camera, count)
        self.findings.append(f)
        if height is not None:
            for b in self.blocks:
                if b.height == height and code not in b.codes:
                    b.codes.append(code)
        return f

    def block(self, height: int) -> BlockEntry:
        for b in self.blocks:
            if b.height == height:
                return b
        b = BlockEntry(height)
        self.blocks.append(b)
        self.blocks.sort(key=lambda e: e.height)
        return b

    # -- reading
    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def by_severity(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    def has(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    @property
    def verdict(self) -> str:
        """Fail closed: failure > untrusted > unchecked > gap > verified."""
        for severity, verdict in _VERDICT_ORDER:
            if self.by_severity(severity):
                return verdict.value
        return Verdict.VERIFIED.value

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def reasons(self) -> list[str]:
        """One line per code that decided the verdict (the findings of the deciding severity)."""
        decisive = next((fs for sev, _ in _VERDICT_ORDER if (fs := self.by_severity(sev))), [])
        counts: Counter[str] = Counter()
        first: dict[str, Finding] = {}
        for f in decisive:
            counts[f.code] += f.count
            first.setdefault(f.code, f)
        out = []
        for code, n in counts.items():
            where = _where(first[code])
            out.append(f"{code} x{n}: {first[code].message or CODES[code][1]}{where}")
        return out

    def code_keys(self) -> set[tuple[str, int | None]]:
        """(code, height) pairs: what the Python and JavaScript verifiers are compared on."""
        return {(f.code, f.height) for f in self.findings}

    # -- serialisation
    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "producedBy": self.produced_by,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "camera": {"id": self.camera_id, "ip": self.camera_ip},
            "range": {"fromMs": self.from_ms, "toMs": self.to_ms},
            "chain": {"chainId": self.chain_id, "videoLedger": self.ledger, "consortium": self.consortium},
            "blocks": [b.to_json() for b in self.blocks],
            "gaps": [g.to_json() for g in self.gaps],
            "clips": [c.to_json() for c in self.clips],
            "findings": [f.to_json() for f in self.findings],
            "codes": sorted(self.codes),
            "tracks": dict(self.tracks),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Report":
        r = cls(
            camera_id=d.get("camera", {}).get("id"), camera_ip=d.get("camera", {}).get("ip"),
            from_ms=d.get("range", {}).get("fromMs"), to_ms=d.get("range", {}).get("toMs"),
            chain_id=d.get("chain", {}).get("chainId"), ledger=d.get("chain", {}).get("videoLedger"),
            consortium=d.get("chain", {}).get("consortium"), produced_by=d.get("producedBy", "frameledger"),
        )
        r.blocks = [BlockEntry(**b) for b in d.get("blocks", [])]
        r.gaps = [GapEntry(**g) for g in d.get("gaps", [])]
        r.clips = [ClipEntry(**c) for c in d.get("clips", [])]
        r.findings = [Finding.from_json(f) for f in d.get("findings", [])]
        r.tracks = {str(k): int(v) for k, v in (d.get("tracks") or {}).items()}
        return r

    # -- human rendering
    def render_text(self) -> str:
        lines = [
            f"Evidence report ({self.produced_by})",
            f"camera   : {self.camera_ip or '?'} ({_short(self.camera_id, 16)})",
            f"range    : {_fmt_ms(self.from_ms)} -> {_fmt_ms(self.to_ms)}",
            f"chain    : id {self.chain_id}, VideoLedger {self.ledger or '-'}",
            "",
        ]
        if self.blocks:
            lines.append(render_table(
                ["height", "window (UTC)", "frames", "presented", "root", "anchor tx", "attest", "final", "status"],
                [[b.height,
                  f"{_fmt_ms(b.window_start_ms)[11:]}-{_fmt_ms(b.window_end_ms)[11:]}" if b.window_start_ms is not None else "-",
                  "-" if b.frame_count is None else b.frame_count,
                  b.frames_presented,
                  _short(b.frames_root),
                  _short(b.anchor_tx),
                  "-" if b.attestations is None else b.attestations,
                  {True: "yes", False: "NO", None: "-"}[b.finalized],
                  _block_status(b)] for b in self.blocks],
                title="Blocks",
            ))
            lines.append("")
        if self.gaps:
            lines.append(render_table(
                ["kind", "from (UTC)", "to (UTC)", "height", "seq", "keyframe lost", "substitute", "unplayable after"],
                [[g.kind if g.reason is None else f"{g.kind}: {g.reason[:40]}", _fmt_ms(g.from_ms)[11:], _fmt_ms(g.to_ms)[11:], "-" if g.height is None else g.height,
                  (f"after {g.after_seq}" if g.after_seq is not None else "-") if g.from_seq is None
                  else f"{g.from_seq}-{g.to_seq}", "yes" if g.keyframe_lost else "no",
                  _short(g.substitute_camera) + (f" ({g.substitute_frames} frames)" if g.substitute_camera else ""),
                  g.not_playable_frames] for g in self.gaps],
                title="Gaps",
            ))
            lines.append("")
        if self.clips:
            lines.append(render_table(
                ["clip", "kind", "frames", "from (UTC)", "to (UTC)", "bytes"],
                [[c.path, c.kind, c.frames, _fmt_ms(c.start_ms)[11:], _fmt_ms(c.end_ms)[11:],
                  f"re-encoded: {c.why}" if c.reencoded else "original packets (byte-exact remux)"] for c in self.clips],
                title="Clips",
            ))
            lines.append("")
        notable = [f for f in self.findings if f.severity != "success"]
        if notable:
            counts: Counter[tuple[str, str]] = Counter()
            example: dict[tuple[str, str], Finding] = {}
            for f in notable:
                key = (f.severity, f.code)
                counts[key] += f.count
                example.setdefault(key, f)
            order = {s: i for i, s in enumerate(SEVERITIES)}
            lines.append(render_table(
                ["severity", "code", "count", "first occurrence"],
                [[s, c, n, (example[(s, c)].message or CODES[c][1]) + _where(example[(s, c)])]
                 for (s, c), n in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))],
                title="Status codes",
            ))
            lines.append("")
        passed: Counter[str] = Counter()
        for f in self.by_severity("success"):
            passed[f.code] += f.count
        if passed:
            lines.append("checks passed: " + ", ".join(f"{c} x{n}" for c, n in sorted(passed.items())))
            lines.append("")
        lines.append(f"VERDICT: {self.verdict.upper().replace('_', ' ')}")
        for r in self.reasons:
            lines.append(f"  - {r}")
        return "\n".join(lines) + "\n"


_VERDICT_ORDER = (("failure", Verdict.FAILED), ("untrusted", Verdict.UNTRUSTED),
                  ("unchecked", Verdict.PARTIALLY_VERIFIED), ("gap", Verdict.VERIFIED_WITH_DECLARED_GAPS))


def _where(f: Finding) -> str:
    parts = []
    if f.height is not None:
        parts.append(f"block {f.height}")
    if f.seq is not None:
        parts.append(f"seq {f.seq}")
    if f.camera:
        parts.append(f"camera {_short(f.camera)}")
    return f" ({', '.join(parts)})" if parts else ""


def _block_status(b: BlockEntry) -> str:
    ctx = "context: " if b.context_only else ""
    bad = [c for c in b.codes if severity_of(c) == "failure"]
    if bad:
        return ctx + ",".join(bad)
    gaps = [c for c in b.codes if severity_of(c) in ("gap", "warning")]
    return ctx + "ok" + (" (" + ",".join(gaps) + ")" if gaps else "")


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Keep order, drop exact duplicates (the same code about the same thing twice)."""
    seen: set[tuple] = set()
    out = []
    for f in findings:
        key = (f.code, f.height, f.seq, f.camera, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
