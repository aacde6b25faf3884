#!/usr/bin/env node
// Independent verifier for FrameLedger evidence bundles (S6).
//
// A third party with other tools must reach the same verdict as `frameledger verify`. So this
// script shares no code with the Python implementation: it uses only @openzeppelin/merkle-tree
// (and what that package itself depends on: @metamask/abi-utils for ABI encoding,
// ethereum-cryptography for keccak-256), Node's own crypto/zlib/fs, and raw JSON-RPC (eth_call,
// eth_getLogs) through fetch. It reads the zip (or the directory it was unzipped into) and the
// MP4 sample tables itself.
//
// It applies the evidence rules (docs/EVIDENCE.md) step for step and prints the same status
// codes. The chain is the authority: headers are compared with the ones anchored at their heights,
// manifests with anchored digests (their frames rebuilt into a StandardMerkleTree with the
// library's makeMerkleTree), multiproofs with anchored roots (locally with the library's
// processMultiProof and on chain with VideoLedger.verifyFrames), clip packets and raw frames with
// the manifests' SHA-256, a remuxed clip's avcC with the manifest's codec extradata.
//
// Trust fails closed: the ledger comes from --ledger, --deployment, --trust or the default
// chain/deployments/<chainId>.json next to scripts/ (directory overridable by
// $FRAMELEDGER_DEPLOYMENTS_DIR), never from the bundle; without any, the verdict is `untrusted`.
// This verifier cannot decode video: a re-encoded clip's pictures are reported as unchecked.
//
// Hostile bundles: the zip central directory is checked first (names, duplicates, member count),
// every member is read against the limit of its kind (MEMBER_LIMITS, LIMITS), inflation is
// streamed and capped whatever the zip headers claim, the zip is read positionally (never whole),
// clips are parsed from box headers with only `moov` in memory (a deflated clip is inflated to a
// temp file under os.tmpdir(), removed afterwards). bundle.json is read strictly: a field of the
// wrong type is bundle.invalid.
//
// usage: node scripts/verify_bundle.js BUNDLE.zip|DIR --rpc URL [--ledger 0xADDR] [--deployment FILE]
//                                      [--trust FILE] [--json]
//        node scripts/verify_bundle.js --codes      (the status code table: code -> severity, JSON)
// env:   FRAMELEDGER_RPC (default --rpc), FRAMELEDGER_DEPLOYMENTS_DIR (where <chainId>.json is
//        looked up without a trust flag), FRAMELEDGER_VERIFY_PEAK_RSS=1 (print "peak RSS N KiB" on stderr)
// exit:  0 verified, 3 verified with declared gaps, 1 failed, 4 untrusted, 5 partially verified,
//        2 usage error (bad flag, unreadable or malformed trust configuration)
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const { Readable } = require('node:stream');
const { pipeline } = require('node:stream/promises');
const { standardLeafHash } = require('@openzeppelin/merkle-tree/dist/hashes');
const { makeMerkleTree, getProof, processMultiProof } = require('@openzeppelin/merkle-tree/dist/core');
const { encode: abiEncode, decode: abiDecode } = require('@metamask/abi-utils');
const { keccak256 } = require('ethereum-cryptography/keccak');

const BUNDLE_FORMAT = 'frameledger.evidence-bundle/1';
const MANIFEST_FORMAT = 'frameledger.manifest/1';
const TRUST_FORMAT = 'frameledger.trust/1';
const FRAME_FIELDS = ['seq', 'timestampMs', 'sha256', 'keyframe', 'size', 'dtsMs'];
const LEAF_ENCODING = ['bytes32', 'uint64', 'uint64', 'bytes32'];
const HEADER_TYPES = ['bytes32', 'uint64', 'bytes32', 'uint64', 'uint64', 'uint32', 'bytes32', 'bytes32', 'address'];
const HEADER_FIELDS = ['cameraId', 'height', 'prevHash', 'windowStartMs', 'windowEndMs', 'frameCount', 'framesRoot',
  'manifestDigest', 'proposer'];
const ZERO32 = '0x' + '00'.repeat(32);
const DEFAULT_DEPLOYMENTS_DIR = path.join(__dirname, '..', 'chain', 'deployments');

const MiB = 1024 * 1024;
// Bundle reading limits (docs/EVIDENCE.md; the Python verifier applies the same).
const MEMBER_LIMITS = { index: 16 * MiB, manifest: 16 * MiB, batch: 8 * MiB, proof: 64 * MiB, frame: 32 * MiB,
  clip: 4 * 1024 * MiB };
const LIMITS = { members: 100_000, blocks: 10_000, batches: 10_000, blocksPerBatch: 10_000, walkBackBatches: 1_000, clips: 10_000, framesPerClip: 1_000_000, rawFrames: 1_000_000,
  codecSources: 10_000, centralDirectory: 64 * MiB, moov: 64 * MiB, topLevelBoxes: 4096, trustFile: 16 * MiB };
const CHUNK = MiB;
const RPC_TIMEOUT_MS = 30_000;  // per JSON-RPC request, as the Python verifier's default timeout

// code -> [severity, meaning]. The same table as offchain/evidence/report.py (a test keeps them equal).
const CODE_TABLE = {
  // -- success
  "block.header.match": ["success", "the header hashes to the block hash anchored at its height"],
  "block.final": ["success", "a quorum of consortium nodes attested the block"],
  "manifest.digest.match": ["success", "the manifest's SHA-256 is the digest anchored in the header"],
  "block.root.match": ["success", "the manifest's frames rebuild the anchored Merkle root and frame count"],
  "frame.proof.valid": ["success", "the frames' multiproof verifies against the anchored root, on chain"],
  "frame.digest.match": ["success", "every presented frame's bytes hash to the anchored digest"],
  "clip.packets.match": ["success", "the clip's packets are the anchored frames, byte for byte, in order and on time"],
  "clip.pictures.match": ["success", "every picture of a re-encoded clip matches the decoded anchored frame it stands for"],
  // -- failure
  "bundle.invalid": ["failure", "the bundle cannot be read or its index is malformed"],
  "bundle.contract.mismatch": ["failure", "the bundle names a ledger contract other than the one the verifier trusts"],
  "chain.unavailable": ["failure", "the chain could not be queried"],
  "chain.id.mismatch": ["failure", "the chain answering is not the chain the evidence was anchored on"],
  "camera.unknown": ["failure", "the camera is not registered on this ledger"],
  "range.invalid": ["failure", "the requested time range is empty or malformed"],
  "range.empty": ["failure", "no anchored block covers any part of the requested range"],
  "block.missing": ["failure", "a block the chain holds for the range is absent from the evidence"],
  "block.root.unanchored": ["failure", "no block is anchored at the height the evidence relies on"],
  "block.header.mismatch": ["failure", "the header presented is not the header anchored at that height"],
  "block.chain.broken": ["failure", "a block does not link to the hash of the block before it"],
  "block.not_final": ["failure", "the block has not been attested by a quorum of nodes"],
  "block.root.mismatch": ["failure", "the manifest's frames do not rebuild the anchored root or frame count"],
  "tx.anchor.mismatch": ["failure", "the anchoring transaction named is not the one that anchored the block"],
  "tx.attest.mismatch": ["failure", "the attestation transactions named are not the block's attestations"],
  "manifest.missing": ["failure", "the block's manifest could not be found"],
  "manifest.digest.mismatch": ["failure", "the manifest's SHA-256 is not the digest anchored in the header"],
  "manifest.order.invalid": ["failure", "the manifest presented for this block is another block's manifest"],
  "manifest.header.mismatch": ["failure", "the manifest contradicts its header (camera, height, window)"],
  "manifest.invalid": ["failure", "the manifest is not a well-formed frameledger manifest"],
  "frame.missing": ["failure", "an anchored frame in the range is not presented"],
  "frame.digest.mismatch": ["failure", "a frame's bytes do not hash to the anchored digest"],
  "frame.order.invalid": ["failure", "frames are presented out of order (bytes of another anchored frame at this place)"],
  "frame.unknown": ["failure", "a presented frame is not listed in its block's manifest"],
  "frame.proof.invalid": ["failure", "the multiproof is absent, malformed or does not verify against the anchored root"],
  "clip.invalid": ["failure", "a clip is missing or cannot be demuxed"],
  "clip.undecodable": ["failure", "a clip does not decode end to end"],
  "clip.timing.mismatch": ["failure", "a clip's presentation times differ from the anchored capture times"],
  "gap.undeclared": ["failure", "sequence numbers are missing without a gap declared in the manifest"],
  "camera.outage.signature.invalid": ["failure", "an outage declaration in an anchored manifest is not signed by any device key the chain set for the camera"],
  "camera.outage.invalid": ["failure", "an outage declaration in an anchored manifest is malformed, another camera's, or outside its block's window"],
  "bundle.member.unsafe": ["failure", "a member name is absolute, contains `..` or a backslash, or escapes the bundle"],
  "bundle.member.duplicate": ["failure", "two members of the zip share a name"],
  "bundle.member.oversize": ["failure", "a member is larger than the limit for its kind"],
  "bundle.entry.duplicate": ["failure", "a block, clip, raw frame or codec source is listed twice in the index"],
  "clip.codec.mismatch": ["failure", "a remuxed clip's codec configuration (avcC parameter sets) is not the one anchored in the manifest"],
  "clip.pictures.mismatch": ["failure", "a picture of a re-encoded clip differs from the decoded anchored frame it stands for"],
  // batch mode (docs/EVIDENCE.md "Batch mode")
  "batch.manifest.missing": ["failure", "a batch the chain holds for the range (or before it, for the chain rule) has no batch manifest in the evidence"],
  "batch.manifest.invalid": ["failure", "a batch manifest is not a canonical frameledger.batch/1 document"],
  "batch.root.mismatch": ["failure", "a batch manifest's headers do not rebuild the anchored batch root"],
  "batch.manifest.mismatch": ["failure", "a batch manifest's SHA-256 or block count is not the anchored batch's"],
  "batch.chain.broken": ["failure", "the camera's blocks across batches do not form its hash chain (prevHash, height + 1, continuous time, link to the previous block)"],
  "batch.camera.duplicate": ["failure", "a batch holds a second header for the camera"],
  "batch.header.invalid": ["failure", "the camera's header in a batch breaks a header rule (window, frames root)"],
  "bundle.anchoring.mismatch": ["failure", "the bundle's anchoring mode (header or batch) is not the one the trusted deployment's chain records for the camera and range"],
  // -- untrusted
  "bundle.contract.untrusted": ["untrusted", "no trusted consortium deployment is configured for this chain; checked only against the ledger the bundle names"],
  // -- unchecked
  "clip.pictures.unchecked": ["unchecked", "this verifier cannot decode video, so the pictures of a re-encoded clip are not bound to anchored bytes"],
  // -- gap
  "gap.declared": ["gap", "frames no node could produce; declared in the anchored manifest"],
  "gap.keyframe_lost": ["gap", "the declared gap lost a keyframe; following frames cannot be decoded until the next one"],
  "gap.substituted": ["gap", "the gap is filled with another camera's frames, shown separately and marked"],
  "range.uncovered": ["gap", "part of the range has no anchored block"],
  "camera.outage.declared": ["gap", "the camera declared (signed by its device key) that it was lost from one capture time to another; the time jump in its frames is that outage"],
  "stream.unended": ["gap", "the camera's stream stopped without a signed end in this block; frames after its last one may be missing (declared, not hidden)"],
  // -- warning
  "block.disputed": ["warning", "at least one node disputed the block"],
  "store.block.corrupt": ["warning", "a store held a corrupt copy; an intact copy came from another store"],
  "frame.not_playable": ["warning", "verified frames that cannot be decoded (no keyframe since a gap); kept as raw bytes"],
  "clip.reencode.failed": ["warning", "a substituted span could not be re-encoded; its frames are kept as raw bytes"],
  "clip.decoder.limited": ["warning", "this machine's decoder could not decode a byte-exact clip from its keyframe; a decoder limitation, not a failure of the evidence"],
  // -- info
  "clip.reencoded": ["info", "the clip was re-encoded (substituted span); its original bytes are in the bundle"],
  "clip.preroll": ["info", "the clip starts at the keyframe before the range or ends after it, so it decodes"],
  "track.audio": ["info", "the camera's audio packets, verified against the anchored roots like its frames; carried raw and, where an MP4 can hold the codec, in the clip's audio track"],
  "clip.audio.mismatch": ["failure", "a clip's audio track does not hold exactly the anchored audio packets it lists"],
};
// Tracks (issue 10): seq = track * 2^48 + n (offchain/core/block.py), 0 video, 1 audio; below 2^53, exact here.
const TRACK_SPAN = 2 ** 48;
const trackOf = seq => Math.floor(seq / TRACK_SPAN);
const TRACK_NAMES = ['video', 'audio'];
const CODES = Object.fromEntries(Object.entries(CODE_TABLE).map(([code, [severity]]) => [code, severity]));
const VERDICT_EXIT = { verified: 0, verified_with_declared_gaps: 3, failed: 1, untrusted: 4, partially_verified: 5 };
const SEVERITY_ORDER = ['failure', 'untrusted', 'unchecked', 'gap', 'warning', 'info', 'success'];

class BundleError extends Error {}
class UsageError extends Error {}
// A member that cannot be used: `code` is the finding it raises (null: absent, reported downstream).
class MemberError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

// ------------------------------------------------------------------ bytes and hashes

const hex = u8 => '0x' + Buffer.from(u8).toString('hex');
const unhex = s => Buffer.from(String(s).replace(/^0x/i, ''), 'hex');
const sha256 = b => '0x' + crypto.createHash('sha256').update(b).digest('hex');
const keccak = b => hex(keccak256(b instanceof Uint8Array ? b : Buffer.from(b)));
const selector = sig => keccak(Buffer.from(sig)).slice(0, 10);
const word = n => BigInt(n).toString(16).padStart(64, '0');
const isHex = (s, bytes) => typeof s === 'string' && new RegExp(`^0x[0-9a-fA-F]{${2 * bytes}}$`).test(s);
const sameAddress = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();

function headerHash(h) {
  return keccak(abiEncode(HEADER_TYPES, [h.cameraId, BigInt(h.height), h.prevHash, BigInt(h.windowStartMs),
    BigInt(h.windowEndMs), BigInt(h.frameCount), h.framesRoot, h.manifestDigest, h.proposer]));
}

// ------------------------------------------------------------------ bundle.json, read strictly

// A field of the wrong type or shape is a BundleError (-> bundle.invalid), never a guess.
const field = {
  obj(v, at) { if (!v || typeof v !== 'object' || Array.isArray(v)) throw new BundleError(`${at} must be an object`); return v; },
  arr(v, at, max) {
    if (!Array.isArray(v)) throw new BundleError(`${at} must be a list`);
    if (v.length > max) throw new BundleError(`${at} lists ${v.length} entries, more than the limit of ${max}`);
    return v;
  },
  int(v, at, min = 0) {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new BundleError(`${at} must be an integer >= ${min}`);
    return v;
  },
  str(v, at) { if (typeof v !== 'string') throw new BundleError(`${at} must be a string`); return v; },
  bool(v, at) { if (typeof v !== 'boolean') throw new BundleError(`${at} must be true or false`); return v; },
  bytes32(v, at) { if (!isHex(v, 32)) throw new BundleError(`${at} must be 0x and 64 hex digits`); return v.toLowerCase(); },
  address(v, at) { if (!isHex(v, 20)) throw new BundleError(`${at} must be 0x and 40 hex digits`); return v; },
  opt(v, read, at, dflt = null) { return v === undefined || v === null ? dflt : read(v, at); },
};

function parseHeader(d, at) {
  field.obj(d, at);
  const h = {};
  for (const k of HEADER_FIELDS) {
    const read = { cameraId: field.bytes32, prevHash: field.bytes32, framesRoot: field.bytes32, manifestDigest: field.bytes32,
      proposer: field.address }[k] || field.int;
    h[k] = read(d[k], `${at}.${k}`);
  }
  return h;
}

function parseBlockEntry(b, at) {
  field.obj(b, at);
  return {
    height: field.int(b.height, `${at}.height`), header: field.opt(b.header, parseHeader, `${at}.header`),
    blockHash: field.opt(b.blockHash, field.bytes32, `${at}.blockHash`),
    anchorTx: field.opt(b.anchorTx, field.bytes32, `${at}.anchorTx`),
    attestTxs: field.opt(b.attestTxs, (v, a) => field.arr(v, a, LIMITS.blocks).map((t, i) => field.bytes32(t, `${a}[${i}]`)),
      `${at}.attestTxs`, []),
    manifestPath: field.opt(b.manifest, field.str, `${at}.manifest`), proofPath: field.opt(b.proof, field.str, `${at}.proof`),
    contextOnly: field.opt(b.contextOnly, field.bool, `${at}.contextOnly`, false),
  };
}

function parseClipEntry(c, at) {
  field.obj(c, at);
  const frames = field.arr(c.frames, `${at}.frames`, LIMITS.framesPerClip).map((p, i) => {
    if (!Array.isArray(p) || p.length !== 2) throw new BundleError(`${at}.frames[${i}] must be [height, seq]`);
    return [field.int(p[0], `${at}.frames[${i}][0]`), field.int(p[1], `${at}.frames[${i}][1]`)];
  });
  return {
    path: field.str(c.path, `${at}.path`), kind: field.opt(c.kind, field.str, `${at}.kind`, 'original'),
    camera: field.bytes32(c.camera, `${at}.camera`), reencoded: field.opt(c.reencoded, field.bool, `${at}.reencoded`, false),
    why: field.opt(c.why, field.str, `${at}.why`), frames,
    audio: field.arr(c.audio ?? [], `${at}.audio`, LIMITS.framesPerClip).map((p, i) => {
      if (!Array.isArray(p) || p.length !== 2) throw new BundleError(`${at}.audio[${i}] must be [height, seq]`);
      return [field.int(p[0], `${at}.audio[${i}][0]`), field.int(p[1], `${at}.audio[${i}][1]`)];
    }),
  };
}

function parseRawEntry(r, at) {
  field.obj(r, at);
  return { height: field.int(r.height, `${at}.height`), camera: field.bytes32(r.camera, `${at}.camera`),
    seq: field.int(r.seq, `${at}.seq`), path: field.str(r.path, `${at}.path`) };
}

function parseCodecSource(s, at) {
  field.obj(s, at);
  return { camera: field.bytes32(s.camera, `${at}.camera`), height: field.int(s.height, `${at}.height`),
    blockHash: field.bytes32(s.blockHash, `${at}.blockHash`), header: parseHeader(s.header, `${at}.header`),
    manifestPath: field.str(s.manifest, `${at}.manifest`) };
}

// Entries listed twice: the first stands, each repeat is a bundle.entry.duplicate finding.
function dropDuplicates(entries, keyOf, describe, duplicates) {
  const seen = new Set();
  return entries.filter(e => {
    const k = keyOf(e);
    if (!seen.has(k)) { seen.add(k); return true; }
    duplicates.push(describe(e));
    return false;
  });
}

function clipFrameDuplicates(clip, duplicates) {
  const seen = new Set();
  for (const [h, seq] of clip.frames) {
    const k = `${h}|${seq}`;
    if (seen.has(k)) duplicates.push(['bundle.entry.duplicate', `${clip.path} lists [${h}, ${seq}] twice`, h, { seq }]);
    seen.add(k);
  }
}

// bundle.json -> { claim, duplicates: [[code, message, height, extra]] }. Throws BundleError.
function parseIndex(doc) {
  field.obj(doc, 'bundle.json');
  if (doc.format !== BUNDLE_FORMAT) throw new BundleError(`not a ${BUNDLE_FORMAT} index`);
  if (doc.leafEncoding !== undefined && JSON.stringify(doc.leafEncoding) !== JSON.stringify(LEAF_ENCODING)) {
    throw new BundleError('unexpected leafEncoding');
  }
  const camera = field.obj(doc.camera, 'camera'), range = field.obj(doc.range, 'range');
  const contracts = field.obj(doc.contracts, 'contracts');
  const list = (v, key, max, read) => field.opt(v, (x, at) => field.arr(x, at, max).map((e, i) => read(e, `${at}[${i}]`)), key, []);
  const duplicates = [];
  const claim = {
    cameraId: field.bytes32(camera.id, 'camera.id'), cameraIp: field.opt(camera.ip, field.str, 'camera.ip'),
    fromMs: field.int(range.fromMs, 'range.fromMs', -Number.MAX_SAFE_INTEGER),
    toMs: field.int(range.toMs, 'range.toMs', -Number.MAX_SAFE_INTEGER),
    chainId: field.int(doc.chainId, 'chainId'), ledger: field.address(contracts.VideoLedger, 'contracts.VideoLedger'),
    consortium: field.opt(contracts.Consortium, field.address, 'contracts.Consortium'),
    blocks: dropDuplicates(field.arr(doc.blocks, 'blocks', LIMITS.blocks).map((b, i) => parseBlockEntry(b, `blocks[${i}]`)),
      b => b.height, b => ['bundle.entry.duplicate', `block ${b.height} is listed twice`, b.height, {}], duplicates),
    clips: dropDuplicates(list(doc.clips, 'clips', LIMITS.clips, parseClipEntry),
      c => c.path, c => ['bundle.entry.duplicate', `clip ${c.path} is listed twice`, null, {}], duplicates),
    raw: dropDuplicates(list(doc.rawFrames, 'rawFrames', LIMITS.rawFrames, parseRawEntry), r => `${r.height}|${r.camera}|${r.seq}`,
      r => ['bundle.entry.duplicate', `raw frame (${r.height}, ${r.camera}, ${r.seq}) is listed twice`, r.height,
        { seq: r.seq, camera: r.camera }], duplicates),
    codecSources: dropDuplicates(list(doc.codecSources, 'codecSources', LIMITS.codecSources, parseCodecSource),
      s => `${s.camera}|${s.height}`, s => ['bundle.entry.duplicate', `codec source (${s.camera}, ${s.height}) is listed twice`,
        s.height, { camera: s.camera }], duplicates),
  };
  for (const c of claim.clips) clipFrameDuplicates(c, duplicates);
  parseAnchoring(doc, contracts, claim);
  return { claim, duplicates };
}

// `anchoring` (absent: "header") and, in batch mode, the BatchLedger and where each batch manifest is.
function parseAnchoring(doc, contracts, claim) {
  const mode = field.opt(doc.anchoring, field.str, 'anchoring', 'header');
  if (mode !== 'header' && mode !== 'batch') throw new BundleError(`anchoring must be "header" or "batch", got ${JSON.stringify(mode)}`);
  claim.anchoring = mode;
  claim.batches = new Map();
  if (mode === 'header') {
    if ((doc.batches !== undefined && doc.batches !== null) || (contracts.BatchLedger !== undefined && contracts.BatchLedger !== null)) {
      throw new BundleError('a header-mode index carries no batches or BatchLedger');
    }
    return;
  }
  claim.batchLedger = field.address(contracts.BatchLedger, 'contracts.BatchLedger');
  field.arr(doc.batches, 'batches', LIMITS.batches).forEach((b, i) => {
    field.obj(b, `batches[${i}]`);
    const index = field.int(b.index, `batches[${i}].index`);
    const member = field.str(b.manifest, `batches[${i}].manifest`);
    if (!claim.batches.has(index)) claim.batches.set(index, member);
  });
}

// ------------------------------------------------------------------ zip (or directory) reading

// Why a member name cannot be used, or null. The same rule for zip members and for the paths the
// index names in a directory bundle.
function unsafeReason(name) {
  if (typeof name !== 'string' || name === '') return 'is empty';
  if (name.includes('\0')) return 'contains NUL';
  if (name.includes('\\')) return 'contains a backslash';
  if (name.startsWith('/')) return 'is absolute';
  if (/^[A-Za-z]:/.test(name)) return 'starts with a drive letter';
  if (name.split('/').includes('..')) return 'has a .. component';
  return null;
}
const unsafeMessage = (name, why) => `member name ${JSON.stringify(name)} ${why}`;

// The limit kind of a zip member, by name (a member is also read against the kind of its role).
function kindOfName(name) {
  if (name === 'bundle.json') return 'index';
  const top = name.split('/')[0];
  return { manifests: 'manifest', batches: 'batch', proofs: 'proof', frames: 'frame', clips: 'clip' }[top] || null;
}
const oversizeMessage = (name, kind, size) => `${name}: ${size} bytes, over the ${MEMBER_LIMITS[kind]}-byte limit for ${kind} members`;

function readExact(fd, pos, len, buf = Buffer.alloc(len)) {
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) throw new BundleError('truncated file');
    got += n;
  }
  return buf;
}

// A byte range of an open file, read positionally.
class FileRange {
  constructor(fd, start, size, cleanup = null) { this.fd = fd; this.start = start; this.size = size; this.cleanup = cleanup; }
  read(pos, len) {
    if (pos < 0 || len < 0 || pos + len > this.size) throw new Error(`read past the end (${pos}+${len} > ${this.size})`);
    return readExact(this.fd, this.start + pos, len);
  }
  async *chunks() { for (let p = 0; p < this.size; p += CHUNK) yield this.read(p, Math.min(CHUNK, this.size - p)); }
  close() { if (this.cleanup) this.cleanup(); this.cleanup = null; }
}

// Members go through `sink(chunk)` chunk by chunk; returns the number of bytes, bounded by `cap`.
async function streamMember(range, deflated, cap, onOversize, sink) {
  let total = 0, overflow = null;
  const consume = async source => {
    for await (const d of source) {
      total += d.length;
      if (total > cap) throw (overflow = onOversize());
      sink(d);
    }
  };
  try {
    if (deflated) await pipeline(Readable.from(range.chunks()), zlib.createInflateRaw(), consume);
    else await consume(range.chunks());
  } catch (e) { throw overflow || e; }  // pipeline reports a stage's throw as an AbortError
  return total;
}

// A bundle's own findings ([code, message]), each once (a zip may repeat one bad name 100,000 times).
function noteOnce(bundle, code, message) {
  bundle.noted = bundle.noted || new Set();
  const k = `${code}\n${message}`;
  if (!bundle.noted.has(k)) { bundle.noted.add(k); bundle.findings.push([code, message]); }
}

class ZipBundle {
  constructor(p) {
    this.path = p;
    this.fd = fs.openSync(p, 'r');
    this.size = fs.fstatSync(this.fd).size;
    this.findings = [];   // [code, message] from the directory scan and from reads, first one each
    this.entries = this.readCentralDirectory();
  }
  note(code, message) { noteOnce(this, code, message); }
  readAt(pos, len) { if (pos < 0 || pos + len > this.size) throw new BundleError('truncated zip'); return readExact(this.fd, pos, len); }
  endOfDirectory() {
    const tailLen = Math.min(this.size, 65557);
    const tail = this.readAt(this.size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
    if (eocd < 0) throw new BundleError(`${this.path} is not a zip (no end of central directory)`);
    let count = tail.readUInt16LE(eocd + 10), cdSize = tail.readUInt32LE(eocd + 12), cdOffset = tail.readUInt32LE(eocd + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const loc = eocd - 20;
      if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw new BundleError('zip64 locator missing');
      const rec = this.readAt(Number(tail.readBigUInt64LE(loc + 8)), 56);
      if (rec.readUInt32LE(0) !== 0x06064b50) throw new BundleError('bad zip64 end record');
      count = Number(rec.readBigUInt64LE(32)); cdSize = Number(rec.readBigUInt64LE(40)); cdOffset = Number(rec.readBigUInt64LE(48));
    }
    if (count > LIMITS.members) throw new BundleError(`zip has ${count} members, more than the limit of ${LIMITS.members}`);
    if (cdSize > LIMITS.centralDirectory) throw new BundleError(`zip central directory of ${cdSize} bytes is over the limit`);
    return { count, cdSize, cdOffset };
  }
  readCentralDirectory() {
    const { count, cdSize, cdOffset } = this.endOfDirectory();
    const cd = this.readAt(cdOffset, cdSize);
    const entries = new Map();
    let p = 0;
    try {
      for (let i = 0; i < count; i++) {
        if (cd.readUInt32LE(p) !== 0x02014b50) throw new BundleError('bad central directory entry');
        const { name, entry, next } = this.directoryEntry(cd, p);
        this.checkName(name, entry, entries);
        entries.set(name, entry);  // a repeated name: the last one, as zip readers do (never verifies anyway)
        p = next;
      }
    } catch (e) {
      if (e instanceof RangeError) throw new BundleError('truncated central directory');
      throw e;
    }
    return entries;
  }
  directoryEntry(cd, p) {
    const flags = cd.readUInt16LE(p + 8), method = cd.readUInt16LE(p + 10), crc = cd.readUInt32LE(p + 16);
    let comp = cd.readUInt32LE(p + 20), uncomp = cd.readUInt32LE(p + 24), offset = cd.readUInt32LE(p + 42);
    const nameLen = cd.readUInt16LE(p + 28), extraLen = cd.readUInt16LE(p + 30), commentLen = cd.readUInt16LE(p + 32);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) throw new RangeError('entry');
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = cd.readUInt16LE(e), len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (uncomp === 0xffffffff) { uncomp = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (comp === 0xffffffff) { comp = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (offset === 0xffffffff) { offset = Number(cd.readBigUInt64LE(q)); q += 8; }
      }
      e += 4 + len;
    }
    return { name, entry: { flags, method, crc, comp, uncomp, offset }, next: extraEnd + commentLen };
  }
  checkName(name, entry, entries) {
    const why = unsafeReason(name);
    if (why) { entry.unsafe = unsafeMessage(name, why); this.note('bundle.member.unsafe', entry.unsafe); }
    if (entries.has(name)) this.note('bundle.member.duplicate', `${JSON.stringify(name)} appears more than once in the zip`);
    const kind = why ? null : kindOfName(name);
    if (kind && entry.uncomp > MEMBER_LIMITS[kind]) {
      entry.oversize = oversizeMessage(name, kind, entry.uncomp);
      this.note('bundle.member.oversize', entry.oversize);
    }
  }
  // The member's entry, checked against `kind`'s limit; MemberError if it cannot be used.
  member(name, kind) {
    const why = unsafeReason(name);
    if (why) throw new MemberError('bundle.member.unsafe', unsafeMessage(name, why));
    const ent = this.entries.get(name);
    if (!ent || name.endsWith('/')) throw new MemberError(null, `${name} is not in the bundle`);
    if (ent.oversize) throw new MemberError('bundle.member.oversize', ent.oversize);
    if (ent.uncomp > MEMBER_LIMITS[kind]) throw new MemberError('bundle.member.oversize', oversizeMessage(name, kind, ent.uncomp));
    if (ent.flags & 1) throw new MemberError(null, `${name} is encrypted`);
    if (ent.method !== 0 && ent.method !== 8) throw new MemberError(null, `${name}: unsupported compression method ${ent.method}`);
    if (ent.method === 0 && ent.comp !== ent.uncomp) throw new MemberError(null, `${name}: stored member with two sizes`);
    const local = this.readAt(ent.offset, 30);
    if (local.readUInt32LE(0) !== 0x04034b50) throw new MemberError(null, `${name}: bad local header`);
    const start = ent.offset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (start + ent.comp > this.size) throw new MemberError(null, `${name}: data past the end of the zip`);
    return { ent, range: new FileRange(this.fd, start, ent.comp) };
  }
  // Streams the member's bytes through `sink`, capped at the kind's limit; CRC and size checked.
  async stream(name, kind, sink) {
    const { ent, range } = this.member(name, kind);
    const limit = MEMBER_LIMITS[kind];
    let crc = 0;
    const total = await streamMember(range, ent.method === 8, limit,
      () => new MemberError('bundle.member.oversize', `${name} inflates past the ${limit}-byte limit for ${kind} members`),
      d => { crc = zlib.crc32(d, crc); sink(d); });
    if (total !== ent.uncomp) throw new MemberError(null, `${name}: size mismatch`);
    if ((crc >>> 0) !== ent.crc) throw new MemberError(null, `${name}: CRC mismatch`);
  }
  // A positional view of the member: stored members in place, deflated ones inflated to a temp file.
  async open(name, kind) {
    const { ent, range } = this.member(name, kind);
    if (ent.method === 0) return range;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'frameledger-verify-'));
    const file = path.join(dir, 'member');
    const fd = fs.openSync(file, 'w+');
    const cleanup = () => { fs.closeSync(fd); fs.rmSync(dir, { recursive: true, force: true }); };
    try {
      let size = 0;
      await this.stream(name, kind, d => { fs.writeSync(fd, d, 0, d.length, size); size += d.length; });
      return new FileRange(fd, 0, size, cleanup);
    } catch (e) { cleanup(); throw e; }
  }
  close() { fs.closeSync(this.fd); }
}

class DirBundle {
  constructor(p) { this.path = p; this.root = fs.realpathSync(p); this.findings = []; }
  note(code, message) { noteOnce(this, code, message); }
  member(name, kind) {
    const why = unsafeReason(name);
    if (why) throw new MemberError('bundle.member.unsafe', unsafeMessage(name, why));
    const p = path.resolve(this.root, name);
    if (!fs.existsSync(p)) throw new MemberError(null, `${name} is not in the bundle`);
    const real = fs.realpathSync(p);
    if (!real.startsWith(this.root + path.sep)) throw new MemberError('bundle.member.unsafe', unsafeMessage(name, 'escapes the bundle'));
    const fd = fs.openSync(real, 'r');
    const st = fs.fstatSync(fd);
    if (!st.isFile()) { fs.closeSync(fd); throw new MemberError(null, `${name} is not a file`); }
    if (st.size > MEMBER_LIMITS[kind]) { fs.closeSync(fd); throw new MemberError('bundle.member.oversize', oversizeMessage(name, kind, st.size)); }
    return new FileRange(fd, 0, st.size, () => fs.closeSync(fd));
  }
  async stream(name, kind, sink) {
    const range = this.member(name, kind);
    try { for await (const d of range.chunks()) sink(d); } finally { range.close(); }
  }
  async open(name, kind) { return this.member(name, kind); }
  close() {}
}

function openBundle(p) {
  if (!fs.existsSync(p)) throw new BundleError(`${p}: no such file or directory`);
  return fs.statSync(p).isDirectory() ? new DirBundle(p) : new ZipBundle(p);
}

// Member reads for the verifier: a member that cannot be used is null, and the reason (an unsafe
// name, a member over its limit) becomes the bundle's finding. Other errors (absent, corrupt)
// leave the finding to the rule that needed the member (manifest.missing, frame.missing, ...).
async function guarded(bundle, name, what) {
  try { return await what(); } catch (e) {
    if (e instanceof MemberError || e instanceof BundleError) {
      if (e.code) bundle.note(e.code, e.message);
      return { error: e.message };
    }
    if (e instanceof TypeError || e instanceof ReferenceError) throw e;  // a bug here, not the bundle's
    return { error: `${name}: ${e.message}` };  // corrupt deflate data, I/O errors
  }
}

async function readSmall(bundle, name, kind) {
  if (name === null || name === undefined) return null;
  const r = await guarded(bundle, name, async () => {
    const parts = [];
    await bundle.stream(name, kind, d => parts.push(d));
    return { data: Buffer.concat(parts) };
  });
  return r.data || null;
}

async function hashMember(bundle, name, kind) {
  const r = await guarded(bundle, name, async () => {
    const h = crypto.createHash('sha256');
    await bundle.stream(name, kind, d => h.update(d));
    return { digest: '0x' + h.digest('hex') };
  });
  return r.digest || null;
}

// ------------------------------------------------------------------ MP4: box headers positionally, `moov` in memory

function boxes(buf, start, end) {
  const out = [];
  let p = start;
  while (p + 8 <= end) {
    let size = buf.readUInt32BE(p);
    const type = buf.toString('latin1', p + 4, p + 8);
    let header = 8;
    if (size === 1) { size = Number(buf.readBigUInt64BE(p + 8)); header = 16; }
    else if (size === 0) size = end - p;
    if (size < header || p + size > end) throw new Error(`bad box ${type}`);
    out.push({ type, start: p + header, end: p + size });
    p += size;
  }
  return out;
}
const child = (buf, box, type) => {
  const b = box && boxes(buf, box.start, box.end).find(x => x.type === type);
  if (!b) throw new Error(`no ${type} box`);
  return b;
};

// The top-level boxes of a file, from their headers only.
function topLevelBoxes(src) {
  const out = [];
  let p = 0;
  while (p + 8 <= src.size) {
    if (out.length >= LIMITS.topLevelBoxes) throw new Error('too many top-level boxes');
    const h = src.read(p, Math.min(16, src.size - p));
    let size = h.readUInt32BE(0), header = 8;
    const type = h.toString('latin1', 4, 8);
    if (size === 1) { if (h.length < 16) throw new Error(`bad box ${type}`); size = Number(h.readBigUInt64BE(8)); header = 16; }
    else if (size === 0) size = src.size - p;
    if (size < header || p + size > src.size) throw new Error(`bad box ${type}`);
    out.push({ type, start: p + header, end: p + size });
    p += size;
  }
  return out;
}

function loadMoov(src) {
  const moov = topLevelBoxes(src).find(b => b.type === 'moov');
  if (!moov) throw new Error('no moov box');
  if (moov.end - moov.start > LIMITS.moov) throw new Error(`moov box of ${moov.end - moov.start} bytes is over the ${LIMITS.moov}-byte limit`);
  return src.read(moov.start, moov.end - moov.start);
}

function sampleSizes(buf, stsz) {
  const fixed = buf.readUInt32BE(stsz.start + 4), n = buf.readUInt32BE(stsz.start + 8);
  if (n > LIMITS.framesPerClip) throw new Error(`${n} samples, more than the limit of ${LIMITS.framesPerClip}`);
  const sizes = [];
  for (let i = 0; i < n; i++) sizes.push(fixed || buf.readUInt32BE(stsz.start + 12 + 4 * i));
  return sizes;
}

function sampleOffsets(buf, stbl, sizes) {
  const n = sizes.length;
  const co = boxes(buf, stbl.start, stbl.end).find(b => b.type === 'stco' || b.type === 'co64');
  if (!co) throw new Error('no stco box');
  const wide = co.type === 'co64';
  const chunks = [];
  for (let i = 0, m = buf.readUInt32BE(co.start + 4); i < m; i++) {
    chunks.push(wide ? Number(buf.readBigUInt64BE(co.start + 8 + 8 * i)) : buf.readUInt32BE(co.start + 8 + 4 * i));
  }
  const stsc = child(buf, stbl, 'stsc');
  const runs = [];
  for (let i = 0, m = buf.readUInt32BE(stsc.start + 4); i < m; i++) {
    const q = stsc.start + 8 + 12 * i;
    runs.push({ first: buf.readUInt32BE(q), per: buf.readUInt32BE(q + 4) });
  }
  if (!runs.length && n) throw new Error('empty stsc');
  const offsets = [];
  for (let c = 0, r = 0; c < chunks.length && offsets.length < n; c++) {
    while (r + 1 < runs.length && runs[r + 1].first <= c + 1) r++;
    let off = chunks[c];
    for (let k = 0; k < runs[r].per && offsets.length < n; k++) { offsets.push(off); off += sizes[offsets.length - 1]; }
  }
  if (offsets.length < n) throw new Error('sample table lists fewer chunk slots than samples');
  return offsets;
}

function presentationTimes(buf, stbl, n) {
  const stts = child(buf, stbl, 'stts');
  const dts = [];
  let t = 0;
  for (let i = 0, m = buf.readUInt32BE(stts.start + 4); i < m && dts.length < n; i++) {
    const cnt = buf.readUInt32BE(stts.start + 8 + 8 * i), delta = buf.readUInt32BE(stts.start + 12 + 8 * i);
    for (let k = 0; k < cnt && dts.length < n; k++) { dts.push(t); t += delta; }
  }
  const cts = new Array(n).fill(0);
  const ctts = boxes(buf, stbl.start, stbl.end).find(b => b.type === 'ctts');
  if (ctts) {
    const signed = buf[ctts.start] === 1;
    let s = 0;
    for (let i = 0, m = buf.readUInt32BE(ctts.start + 4); i < m && s < n; i++) {
      const cnt = buf.readUInt32BE(ctts.start + 8 + 8 * i);
      const off = signed ? buf.readInt32BE(ctts.start + 12 + 8 * i) : buf.readUInt32BE(ctts.start + 12 + 8 * i);
      for (let k = 0; k < cnt && s < n; k++) cts[s++] = off;
    }
  }
  return dts.map((d, i) => d + cts[i]).concat(new Array(Math.max(0, n - dts.length)).fill(0));
}

// The avcC record (payload of stsd -> avc1/avc3 -> avcC), or null when the sample entry has none.
const VISUAL_SAMPLE_ENTRY_BYTES = 78;  // SampleEntry (8) + VisualSampleEntry fields (70) before child boxes
function avcConfig(buf, stbl) {
  const stsd = child(buf, stbl, 'stsd');
  const entry = boxes(buf, stsd.start + 8, stsd.end)[0];
  if (!entry || !['avc1', 'avc3'].includes(entry.type)) return { sampleEntry: entry ? entry.type : null, avcC: null };
  const avcC = boxes(buf, entry.start + VISUAL_SAMPLE_ENTRY_BYTES, entry.end).find(b => b.type === 'avcC');
  return { sampleEntry: entry.type, avcC: avcC ? Buffer.from(buf.subarray(avcC.start, avcC.end)) : null };
}

function hashRange(src, pos, len) {
  const h = crypto.createHash('sha256');
  for (let p = 0; p < len; p += CHUNK) h.update(src.read(pos + p, Math.min(CHUNK, len - p)));
  return '0x' + h.digest('hex');
}

function videoTrack(buf, handler = 'vide') {
  if (boxes(buf, 0, buf.length).some(b => b.type === 'mvex')) throw new Error('fragmented MP4 is not supported');
  for (const trak of boxes(buf, 0, buf.length).filter(b => b.type === 'trak')) {
    const mdia = boxes(buf, trak.start, trak.end).find(b => b.type === 'mdia');
    const hdlr = mdia && boxes(buf, mdia.start, mdia.end).find(b => b.type === 'hdlr');
    if (!hdlr || buf.toString('latin1', hdlr.start + 8, hdlr.start + 12) !== handler) continue;
    const mdhd = child(buf, mdia, 'mdhd');
    const timescale = buf[mdhd.start] === 1 ? buf.readUInt32BE(mdhd.start + 20) : buf.readUInt32BE(mdhd.start + 12);
    if (!timescale) throw new Error('zero timescale');
    return { timescale, stbl: child(buf, child(buf, mdia, 'minf'), 'stbl') };
  }
  if (handler !== 'vide') return null;
  throw new Error('no video track');
}

// The SHA-256 of every sample of a track's sample table, in file order.
function trackDigests(src, buf, stbl) {
  const sizes = sampleSizes(buf, child(buf, stbl, 'stsz'));
  const offsets = sampleOffsets(buf, stbl, sizes);
  return sizes.map((size, i) => {
    if (offsets[i] + size > src.size) throw new Error('sample outside the file');
    return hashRange(src, offsets[i], size);
  });
}

// The first video track of a clip: its samples in file (decode) order { sha256, ptsMs } and its
// avcC record. Only `moov` is held in memory; sample bytes are hashed by positional reads.
function clipSamples(src) {
  const buf = loadMoov(src);
  const { timescale, stbl } = videoTrack(buf);
  const sizes = sampleSizes(buf, child(buf, stbl, 'stsz'));
  const offsets = sampleOffsets(buf, stbl, sizes);
  const pts = presentationTimes(buf, stbl, sizes.length);
  const samples = sizes.map((size, i) => {
    if (offsets[i] + size > src.size) throw new Error('sample outside the file');
    return { sha256: hashRange(src, offsets[i], size), ptsMs: Math.round(pts[i] * 1000 / timescale) };
  });
  const sound = videoTrack(buf, 'soun');
  return { samples, ...avcConfig(buf, stbl), audio: sound ? trackDigests(src, buf, sound.stbl) : null };
}

// ------------------------------------------------------------------ JSON-RPC

class Chain {
  constructor(url, ledger) { this.url = url; this.ledger = ledger; this.id = 0; }
  async rpc(method, params) {
    const res = await fetch(this.url, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++this.id, method, params }), signal: AbortSignal.timeout(RPC_TIMEOUT_MS) });
    const body = await res.json();
    if (body.error) { const e = new Error(`${method}: ${body.error.message}`); e.rpc = body.error; throw e; }
    return body.result;
  }
  async call(sig, types, values, returns, to = this.ledger) {
    const data = selector(sig) + Buffer.from(abiEncode(types, values)).toString('hex');
    const out = await this.rpc('eth_call', [{ to, data }, 'latest']);
    return abiDecode(returns, unhex(out));
  }
  // eth_call that reverts: null
  async tryCall(sig, types, values, returns) {
    try { return await this.call(sig, types, values, returns); } catch (e) {
      if (e.rpc || /revert/i.test(e.message)) return null;
      throw e;
    }
  }
  async logs(eventSig, topics) {
    return this.rpc('eth_getLogs', [{ address: this.ledger, fromBlock: '0x0', toBlock: 'latest',
      topics: [keccak(Buffer.from(eventSig)), ...topics] }]);
  }
}

const ANCHORED = 'BlockAnchored(bytes32,uint64,bytes32,(bytes32,uint64,bytes32,uint64,uint64,uint32,bytes32,bytes32,address))';
const ATTESTED = 'BlockAttested(bytes32,address,uint16)';
const BLOCK_RECORD = '((bytes32,uint64,bytes32,uint64,uint64,uint32,bytes32,bytes32,address),uint64,uint16,uint16,bool)';

async function chainBlock(chain, camera, h) {
  const [bh] = await chain.call('blockHashAt(bytes32,uint64)', ['bytes32', 'uint64'], [camera, BigInt(h)], ['bytes32']);
  const rec = await chain.call('getBlock(bytes32)', ['bytes32'], [bh], [BLOCK_RECORD]);
  const [hdr, anchoredAt, attestations, disputes, finalized] = rec[0];
  const header = {
    cameraId: hex(hdr[0]), height: Number(hdr[1]), prevHash: hex(hdr[2]), windowStartMs: Number(hdr[3]),
    windowEndMs: Number(hdr[4]), frameCount: Number(hdr[5]), framesRoot: hex(hdr[6]), manifestDigest: hex(hdr[7]),
    proposer: hdr[8],
  };
  return { height: h, blockHash: hex(bh), header, anchoredAt: Number(anchoredAt), attestations: Number(attestations),
    disputes: Number(disputes), finalized: Boolean(finalized), anchorTx: null, attestTxs: [] };
}

async function chainBlocks(chain, camera, heights) {
  const out = new Map();
  heights = [...new Set(heights)].filter(h => h >= 1).sort((a, b) => a - b);
  if (!heights.length) return out;
  const [length] = await chain.call('chainLength(bytes32)', ['bytes32'], [camera], ['uint64']);
  const found = [];
  for (const h of heights) {
    if (BigInt(h) > length) { out.set(h, null); continue; }
    out.set(h, await chainBlock(chain, camera, h));
    found.push(h);
  }
  if (found.length) {
    const anchors = await chain.logs(ANCHORED, [camera, found.map(h => '0x' + word(h))]);
    for (const lg of anchors) {
      const h = Number(BigInt(lg.topics[2]));
      if (out.get(h)) out.get(h).anchorTx = lg.transactionHash;
    }
    const byHash = new Map(found.map(h => [out.get(h).blockHash, out.get(h)]));
    const attests = await chain.logs(ATTESTED, [[...byHash.keys()]]);
    for (const lg of attests) {
      const b = byHash.get(lg.topics[1].toLowerCase());
      if (b) b.attestTxs.push(lg.transactionHash);
    }
  }
  return out;
}

// ------------------------------------------------------------------ batch mode (docs/BATCH.md)
//
// The chain holds batch records only; the camera's headers come from the batch manifests the bundle
// carries, each accepted only if its headers rebuild the anchored batch root and its SHA-256 and
// block count are the anchored ones. The per-camera hash chain, which the contract does not enforce
// in batch mode, is checked here: consecutive blocks link, the first links to the camera's previous
// block (or head block), and no batch holds a second header of the camera.

const BATCH_FORMAT = 'frameledger.batch/1';
const BATCH_KEYS = ['blocks', 'format', 'prevBatchRoot', 'windowEndMs', 'windowStartMs'];
const BATCH_RECORD = '(uint64,uint64,uint64,uint32,bytes32,bytes32)';
const BATCH_ANCHORED = 'BatchAnchored(uint256,uint64,address,uint64,bytes32,bytes32,uint32,bytes32,address[])';

// JSON with sorted keys and no whitespace (Python's json.dumps(sort_keys=True, separators=(",", ":"))
// for the ASCII-only documents batch manifests are).
function canonicalJson(v) {
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  if (v && typeof v === 'object') return '{' + Object.keys(v).sort().map(k => JSON.stringify(k) + ':' + canonicalJson(v[k])).join(',') + '}';
  return JSON.stringify(v);
}

// bytes -> { windowStartMs, windowEndMs, headers }; throws BundleError (batch.manifest.invalid).
function parseBatchManifest(bytes) {
  let doc;
  try { doc = JSON.parse(bytes.toString('utf8')); } catch (e) { throw new BundleError(`batch manifest is not JSON: ${e.message}`); }
  field.obj(doc, 'batch manifest');
  if (doc.format !== BATCH_FORMAT || JSON.stringify(Object.keys(doc).sort()) !== JSON.stringify(BATCH_KEYS)) {
    throw new BundleError(`not a ${BATCH_FORMAT} document`);
  }
  const headers = field.arr(doc.blocks, 'blocks', LIMITS.blocksPerBatch).map((b, i) => parseHeader(b, `blocks[${i}]`));
  for (let i = 1; i < headers.length; i++) {
    if (headers[i].cameraId < headers[i - 1].cameraId) throw new BundleError('batch manifest headers are not in camera id order');
  }
  if (canonicalJson(doc) !== bytes.toString('utf8')) throw new BundleError('batch manifest is not in canonical form');
  return { windowStartMs: field.int(doc.windowStartMs, 'windowStartMs'), windowEndMs: field.int(doc.windowEndMs, 'windowEndMs'),
    prevBatchRoot: field.bytes32(doc.prevBatchRoot, 'prevBatchRoot'), headers };
}

// The StandardMerkleTree of (bytes32 blockHash) leaves, sorted by leaf hash (the library's default).
function batchTree(blockHashes) {
  const leaves = blockHashes.map(h => ({ h, leaf: String(standardLeafHash(['bytes32'], [h])).toLowerCase() }));
  leaves.sort((a, b) => Buffer.compare(unhex(a.leaf), unhex(b.leaf)));
  const tree = makeMerkleTree(leaves.map(l => l.leaf));
  const treeIndex = new Map(leaves.map((l, i) => [l.h, tree.length - i - 1]));
  return { root: hex(unhex(tree[0])), proof: h => getProof(tree, treeIndex.get(h)).map(x => hex(unhex(x))) };
}

class BatchSource {
  constructor(chain, batchLedger, bundle, claim) {
    this.chain = chain; this.address = batchLedger; this.bundle = bundle; this.claim = claim;
    this.loaded = new Map();      // index -> { record, manifest, tree, problems }
    this.byHeight = new Map();    // camera|height -> { index, header }
    this.txs = new Map();         // index -> { tx, signers }
    this.rangeIndices = [];
  }
  call(sig, types, values, returns) { return this.chain.call(sig, types, values, returns, this.address); }
  async record(index) {
    const [r] = await this.call('batchAt(uint256)', ['uint256'], [BigInt(index)], [BATCH_RECORD]);
    return { index, windowStartMs: Number(r[0]), windowEndMs: Number(r[1]), anchoredAt: Number(r[2]), blockCount: Number(r[3]),
      batchRoot: hex(r[4]), manifestDigest: hex(r[5]) };
  }
  async recordsInRange(fromMs, toMs) {
    if (fromMs >= toMs) return [];
    const [first, end] = await this.call('batchesInRange(uint64,uint64)', ['uint64', 'uint64'],
      [BigInt(Math.max(0, fromMs)), BigInt(Math.max(0, toMs))], ['uint256', 'uint256']);
    if (Number(end - first) > LIMITS.batches) throw new Error(`${end - first} batches overlap the range; the limit is ${LIMITS.batches}`);
    const out = [];
    for (let i = Number(first); i < Number(end); i++) out.push(await this.record(i));
    return out;
  }
  async load(record) {
    if (this.loaded.has(record.index)) return this.loaded.get(record.index);
    const lb = { record, manifest: null, tree: null, problems: [] };
    this.loaded.set(record.index, lb);
    const where = `batch ${record.index}`;
    const data = await readSmall(this.bundle, this.claim.batches.get(record.index), 'batch');
    if (data === null) { lb.problems.push(['batch.manifest.missing', `${where}: its manifest is not available`]); return lb; }
    let m;
    try { m = parseBatchManifest(data); } catch (e) { lb.problems.push(['batch.manifest.invalid', `${where}: ${e.message}`]); return lb; }
    const tree = m.headers.length ? batchTree(m.headers.map(headerHash)) : null;
    if (!tree || tree.root !== record.batchRoot.toLowerCase()) {
      lb.problems.push(['batch.root.mismatch', `${where}: the manifest's headers do not rebuild the anchored batch root`]);
      return lb;
    }
    if (sha256(data) !== record.manifestDigest.toLowerCase() || m.headers.length !== record.blockCount) {
      lb.problems.push(['batch.manifest.mismatch', `${where}: the manifest is not the anchored one (digest or block count)`]);
      return lb;
    }
    lb.manifest = m; lb.tree = tree;
    for (const h of m.headers) {
      const k = `${h.cameraId}|${h.height}`;
      if (!this.byHeight.has(k)) this.byHeight.set(k, { index: record.index, header: h });
    }
    return lb;
  }
  async heightsInRange(camera, fromMs, toMs) {
    const heights = new Set();
    const records = await this.recordsInRange(fromMs, toMs);
    this.rangeIndices = records.map(r => r.index);
    for (const r of records) {
      const lb = await this.load(r);
      for (const h of lb.manifest ? lb.manifest.headers : []) {
        if (h.cameraId === camera && h.windowStartMs < toMs && h.windowEndMs > fromMs) heights.add(h.height);
      }
    }
    return [...heights].sort((a, b) => a - b);
  }
  async walkBackTo(camera, height) {
    const known = [...this.byHeight.keys()].filter(k => k.startsWith(camera + '|')).map(k => Number(k.split('|')[1]));
    if (known.length && Math.min(...known) < height) return;
    let start;
    if (this.loaded.size) start = Math.min(...this.loaded.keys()) - 1;
    else { const [n] = await this.call('batchCount()', [], [], ['uint256']); start = Number(n) - 1; }
    for (let i = start; i >= 0 && i > start - LIMITS.walkBackBatches; i--) {
      const lb = await this.load(await this.record(i));
      if (lb.manifest && lb.manifest.headers.some(h => h.cameraId === camera && h.height <= height)) return;
    }
  }
  async loadTxs(indices) {
    const todo = [...new Set(indices)].filter(i => !this.txs.has(i));
    if (!todo.length) return;
    const logs = await this.chain.rpc('eth_getLogs', [{ address: this.address, fromBlock: '0x0', toBlock: 'latest',
      topics: [keccak(Buffer.from(BATCH_ANCHORED)), todo.map(i => '0x' + word(i))] }]);
    for (const lg of logs) {
      const [, , , , , signers] = abiDecode(['uint64', 'bytes32', 'bytes32', 'uint32', 'bytes32', 'address[]'], unhex(lg.data));
      this.txs.set(Number(BigInt(lg.topics[1])), { tx: lg.transactionHash, signers });
    }
  }
  async disputesOf(index) {
    this.disputes = this.disputes || new Map();
    if (!this.disputes.has(index)) {
      const [n] = await this.call('disputesOf(uint256)', ['uint256'], [BigInt(index)], ['uint16']);
      this.disputes.set(index, Number(n));
    }
    return this.disputes.get(index);
  }
  async blocks(camera, heights) {
    const out = new Map();
    heights = [...new Set(heights)].filter(h => h >= 1).sort((a, b) => a - b);
    for (const h of heights) if (!this.byHeight.has(`${camera}|${h}`)) await this.walkBackTo(camera, h);
    const found = heights.filter(h => this.byHeight.has(`${camera}|${h}`));
    await this.loadTxs(found.map(h => this.byHeight.get(`${camera}|${h}`).index));
    for (const h of heights) {
      const got = this.byHeight.get(`${camera}|${h}`);
      if (!got) { out.set(h, null); continue; }
      const rec = this.loaded.get(got.index).record, t = this.txs.get(got.index) || { tx: null, signers: [] };
      // Final = anchored with a quorum's signatures AND no node objected on record (disputeBatch).
      const disputes = await this.disputesOf(got.index);
      out.set(h, { height: h, blockHash: headerHash(got.header), header: got.header, anchoredAt: rec.anchoredAt,
        attestations: t.signers.length, disputes, finalized: disputes === 0, anchorTx: t.tx, attestTxs: [], batchIndex: got.index });
    }
    return out;
  }
  // The per-camera chain rule across the batches read (offchain.core.batch.check_batch, per header).
  async chainRule(camera, heights) {
    const findings = [];
    const ordered = [...new Set(heights)].sort((a, b) => a - b);
    let tip = null;
    if (ordered.length) {
      if (ordered[0] === 1) {
        const [cons] = await this.call('consortium()', [], [], ['address']);
        const [head] = await this.chain.call('headBlock(bytes32)', ['bytes32'], [camera], ['bytes32', 'uint64'], cons);
        tip = { hash: hex(head), height: 0, end: 0 };
      } else {
        const prev = (await this.blocks(camera, [ordered[0] - 1])).get(ordered[0] - 1);
        if (prev) tip = { hash: prev.blockHash, height: prev.height, end: prev.header.windowEndMs };
        else findings.push(['batch.chain.broken', `the camera's block ${ordered[0] - 1}, which block ${ordered[0]} must link to, is in no batch read`, ordered[0]]);
      }
    }
    const indices = [...this.loaded.keys()].sort((a, b) => a - b);
    for (const i of indices) findings.push(...this.loaded.get(i).problems);
    for (const i of indices) {
      const lb = this.loaded.get(i);
      const mine = lb.manifest ? lb.manifest.headers.filter(h => h.cameraId === camera) : [];
      if (mine.length > 1) findings.push(['batch.camera.duplicate', `batch ${i} holds more than one header of the camera`]);
    }
    if (!ordered.length) return findings;
    for (const i of indices) {
      const lb = this.loaded.get(i);
      const mine = lb.manifest ? lb.manifest.headers.filter(h => h.cameraId === camera) : [];
      if (!mine.length || mine[0].height < ordered[0] || mine[0].height > ordered[ordered.length - 1]) continue;
      const h = mine[0];
      if (tip) findings.push(...headerRule(lb.manifest, h, tip));
      tip = { hash: headerHash(h), height: h.height, end: h.windowEndMs };
    }
    return findings;
  }
  async verifyFrames(cb, mp, hashes) {
    let root;
    try { root = hex(unhex(processMultiProof({ leaves: hashes, proof: mp.proof, proofFlags: mp.proofFlags }))); } catch { return false; }
    if (root !== cb.header.framesRoot.toLowerCase()) return false;
    const lb = this.loaded.get(cb.batchIndex);
    if (!lb || !lb.tree) return false;
    const [ok] = await this.call('verifyBlockInBatch(uint256,bytes32,bytes32[])', ['uint256', 'bytes32', 'bytes32[]'],
      [BigInt(cb.batchIndex), cb.blockHash, lb.tree.proof(cb.blockHash)], ['bool']);
    return Boolean(ok);
  }
}

function headerRule(manifest, h, tip) {
  const out = [];
  const at = `block ${h.height}`;
  if (h.prevHash.toLowerCase() !== tip.hash.toLowerCase()) out.push(['batch.chain.broken', `${at}: broken-link expected ${tip.hash}`, h.height]);
  if (h.height !== tip.height + 1) out.push(['batch.chain.broken', `${at}: wrong-height expected ${tip.height + 1}, got ${h.height}`, h.height]);
  if (tip.height > 0 && h.windowStartMs < tip.end) out.push(['batch.chain.broken', `${at}: time-not-continuous previous ended ${tip.end}`, h.height]);
  if (h.windowEndMs <= h.windowStartMs) out.push(['batch.header.invalid', `${at}: bad-header-window`, h.height]);
  if (h.windowStartMs < manifest.windowStartMs || h.windowEndMs > manifest.windowEndMs) out.push(['batch.header.invalid', `${at}: outside-batch-window`, h.height]);
  if ((h.frameCount === 0) !== (/^0x0{64}$/i.test(h.framesRoot))) out.push(['batch.header.invalid', `${at}: bad-frames-root`, h.height]);
  return out;
}

// ------------------------------------------------------------------ trust (the verifier's own configuration)

function readJsonFile(file, what) {
  let text;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error('not a file');
    if (st.size > LIMITS.trustFile) throw new Error(`over ${LIMITS.trustFile} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) { throw new UsageError(`${what} ${file}: cannot read it (${e.code || e.message})`); }
  try { return JSON.parse(text); } catch (e) { throw new UsageError(`${what} ${file}: not JSON (${e.message})`); }
}

const trustedAddress = (v, at) => {
  if (!isHex(v, 20)) throw new UsageError(`${at} must be an address (0x and 40 hex digits)`);
  return v;
};
const trustedChainId = (v, at) => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new UsageError(`${at}: chainId must be an integer`);
  return v;
};

// A deployment record (offchain/chain/deployer.py) -> one trusted deployment.
function parseDeploymentRecord(rec, where) {
  const c = rec && typeof rec === 'object' ? rec.contracts : null;
  if (!c || typeof c !== 'object' || !c.VideoLedger || typeof c.VideoLedger !== 'object') {
    throw new UsageError(`${where}: not a deployment record (no contracts.VideoLedger.address)`);
  }
  return { name: where, chainId: trustedChainId(rec.chainId, where),
    VideoLedger: trustedAddress(c.VideoLedger.address, `${where}: contracts.VideoLedger.address`),
    Consortium: c.Consortium === undefined || c.Consortium === null ? null
      : trustedAddress(c.Consortium && c.Consortium.address, `${where}: contracts.Consortium.address`),
    BatchLedger: c.BatchLedger === undefined || c.BatchLedger === null ? null
      : trustedAddress(c.BatchLedger && c.BatchLedger.address, `${where}: contracts.BatchLedger.address`) };
}

function parseTrustFile(doc, where) {
  if (!doc || typeof doc !== 'object' || doc.format !== TRUST_FORMAT || !Array.isArray(doc.deployments)) {
    throw new UsageError(`${where}: not a ${TRUST_FORMAT} document with a deployments list`);
  }
  return doc.deployments.map((d, i) => {
    const at = `${where}: deployments[${i}]`;
    if (!d || typeof d !== 'object') throw new UsageError(`${at} must be an object`);
    if (d.name !== undefined && typeof d.name !== 'string') throw new UsageError(`${at}.name must be a string`);
    return { name: d.name || at, chainId: trustedChainId(d.chainId, at), VideoLedger: trustedAddress(d.VideoLedger, `${at}.VideoLedger`),
      Consortium: d.Consortium === undefined || d.Consortium === null ? null : trustedAddress(d.Consortium, `${at}.Consortium`),
      BatchLedger: d.BatchLedger === undefined || d.BatchLedger === null || d.BatchLedger === '' ? null
        : trustedAddress(d.BatchLedger, `${at}.BatchLedger`) };
  });
}

// The flags -> { explicit, deployments } (chainId null: whatever chain the RPC serves). UsageError.
function loadTrust({ ledger = null, deployment = null, trust = null, deploymentsDir = null } = {}) {
  const deployments = [];
  if (ledger !== null) {
    deployments.push({ name: '--ledger', chainId: null, VideoLedger: trustedAddress(ledger, '--ledger'), Consortium: null, BatchLedger: null });
  }
  if (deployment !== null) deployments.push(parseDeploymentRecord(readJsonFile(deployment, '--deployment'), `--deployment ${deployment}`));
  if (trust !== null) deployments.push(...parseTrustFile(readJsonFile(trust, '--trust'), `--trust ${trust}`));
  const dir = deploymentsDir || process.env.FRAMELEDGER_DEPLOYMENTS_DIR || DEFAULT_DEPLOYMENTS_DIR;
  return { explicit: ledger !== null || deployment !== null || trust !== null, deployments, deploymentsDir: dir };
}

// The trusted deployments for `chainId`, in order: from the flags, else the default record.
function trustedFor(trust, chainId) {
  if (trust.explicit) return trust.deployments.filter(d => d.chainId === null || d.chainId === chainId);
  const file = path.join(trust.deploymentsDir, `${chainId}.json`);
  if (!fs.existsSync(file)) return [];
  const d = parseDeploymentRecord(readJsonFile(file, 'default deployment'), `default deployment ${file}`);
  return d.chainId === chainId ? [d] : [];
}

// Which ledger to verify against, and the trust findings. The bundle never decides what is trusted.
async function resolveLedger(chain, trust, claim) {
  const trusted = trustedFor(trust, chain.chainId);
  if (!trusted.length) {
    return { ledger: claim.ledger, batchLedger: claim.batchLedger || null, findings: [['bundle.contract.untrusted',
      `no trusted deployment for chain ${chain.chainId}; checked only against the ledger the bundle names, ${claim.ledger}`]] };
  }
  const findings = [];
  const match = trusted.find(d => sameAddress(d.VideoLedger, claim.ledger));
  const use = match || trusted[0];
  if (!match) {
    findings.push(['bundle.contract.mismatch', `bundle names ${claim.ledger}, trusted ledger is ${use.VideoLedger}`]);
  }
  // Batch mode: the trusted deployment's BatchLedger, never the bundle's (the same rule as Python's _batch_ledger).
  let batchLedger = use.BatchLedger || null;
  if (claim.anchoring === 'batch') {
    if (!use.BatchLedger) {
      findings.push(['bundle.contract.untrusted', `the trusted deployment names no BatchLedger; checked against the BatchLedger the bundle names (${claim.batchLedger}) only`]);
      batchLedger = claim.batchLedger;
    } else if (!sameAddress(use.BatchLedger, claim.batchLedger)) {
      findings.push(['bundle.contract.mismatch', `bundle names BatchLedger ${claim.batchLedger}, trusted is ${use.BatchLedger}`]);
    }
  }
  return { ledger: use.VideoLedger, consortium: use.Consortium, batchLedger, findings };
}

// ------------------------------------------------------------------ pure rules

function parseCodec(doc) {
  const c = doc && typeof doc.codec === 'object' && doc.codec ? doc.codec : null;
  return { extradata: c && typeof c.extradata === 'string' && c.extradata ? Buffer.from(c.extradata, 'base64') : null };
}

function parseManifest(bytes) {
  let doc;
  try { doc = JSON.parse(bytes.toString('utf8')); } catch (e) { throw new Error(`manifest is not JSON: ${e.message}`); }
  if (!doc || typeof doc !== 'object' || doc.format !== MANIFEST_FORMAT) throw new Error(`not a ${MANIFEST_FORMAT} document`);
  if (JSON.stringify(doc.frameFields || []) !== JSON.stringify(FRAME_FIELDS)) throw new Error('unexpected frameFields');
  const frame = r => {
    if (!Array.isArray(r) || r.length !== 6) throw new Error('bad frame row');
    return { seq: Number(r[0]), timestampMs: Number(r[1]), sha256: hex(unhex(r[2])), keyframe: Boolean(r[3]),
      size: Number(r[4]), dtsMs: r[5] === null ? null : Number(r[5]) };
  };
  try {
    return {
      cameraId: hex(unhex(doc.cameraId)), height: Number(doc.height), windowStartMs: Number(doc.windowStartMs),
      windowEndMs: Number(doc.windowEndMs), frames: doc.frames.map(frame),
      gaps: doc.gaps.map(g => ({ fromSeq: Number(g.fromSeq), toSeq: Number(g.toSeq), fromMs: Number(g.fromMs),
        toMs: Number(g.toMs), keyframeLost: Boolean(g.keyframeLost),
        substituteCamera: g.substituteCamera ? hex(unhex(g.substituteCamera)) : null })),
      substitutions: doc.substitutions.map(s => ({ cameraId: hex(unhex(s.cameraId)), frames: s.frames.map(frame) })),
      codec: parseCodec(doc),
      streamEnd: typeof doc.streamEnd === 'string' ? doc.streamEnd : null,
      cameraIp: doc.cameraIp,
      declaredOutages: parseDeclaredOutages(doc.declaredOutages),
    };
  } catch (e) { throw new Error(`malformed manifest: ${e.message}`); }
}

// Issue 10: the entries as given (each judged by checkDeclaredOutages); not a list of objects: malformed.
function parseDeclaredOutages(v) {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every(e => e !== null && typeof e === 'object' && !Array.isArray(e))) {
    throw new Error('declaredOutages is not a list of objects');
  }
  return v;
}

const leafValues = (cam, f) => [cam, f.seq, f.timestampMs, f.sha256];
const leafKey = (cam, seq, ts, sha) => `${cam}|${seq}|${ts}|${sha}`;

// The StandardMerkleTree leaf keccak256(keccak256(abi.encode(bytes32, uint64, uint64, bytes32))).
// All four types are static, so abi.encode is four 32-byte words; encoding them here instead of
// through @metamask/abi-utils (which builds an Error object per assertion, per value) makes
// verification ~5x faster. Every tree's first leaf is cross-checked against the library's own
// standardLeafHash, so this can never drift from the library's definition unnoticed.
function fastLeafHash(cam, seq, ts, sha) {
  const word64 = v => {
    const n = BigInt(v);
    if (n < 0n || n >= 1n << 64n) throw new Error(`uint64 out of range: ${v}`);
    return Buffer.from(n.toString(16).padStart(64, '0'), 'hex');
  };
  const b32 = v => { const b = unhex(v); if (b.length !== 32) throw new Error(`not bytes32: ${v}`); return b; };
  return keccak(keccak256(Buffer.concat([b32(cam), word64(seq), word64(ts), b32(sha)])));
}

function checkedLeafHashes(cam, frames) {
  const hashes = frames.map(f => fastLeafHash(cam, f.seq, f.timestampMs, f.sha256));
  if (frames.length && standardLeafHash(LEAF_ENCODING, leafValues(cam, frames[0])) !== hashes[0]) {
    throw new Error('internal: leaf encoding differs from @openzeppelin/merkle-tree');
  }
  return hashes;
}

// StandardMerkleTree.of's layout: leaves sorted by hash, then the library's makeMerkleTree.
function framesRoot(cam, frames) {
  if (!frames.length) return { root: ZERO32, known: new Map() };
  const hashes = checkedLeafHashes(cam, frames);
  const known = new Map(frames.map((f, i) => [leafKey(cam, f.seq, f.timestampMs, f.sha256), hashes[i]]));
  return { root: makeMerkleTree([...hashes].sort())[0], known };
}

function checkManifest(data, header, otherDigests) {
  if (data === null) return { manifest: null, trusted: false, codes: [['manifest.missing', 'no manifest for this block']] };
  const digest = sha256(data);
  if (digest !== header.manifestDigest) {
    const other = otherDigests.get(digest);
    if (other !== undefined && other !== header.height) {
      return { manifest: null, trusted: false, codes: [['manifest.order.invalid', `the manifest presented is block ${other}'s`]] };
    }
    return { manifest: null, trusted: false, codes: [['manifest.digest.mismatch', 'manifest does not hash to the anchored digest']] };
  }
  const codes = [['manifest.digest.match', '']];
  let m;
  try { m = parseManifest(data); } catch (e) { return { manifest: null, trusted: false, codes: [...codes, ['manifest.invalid', e.message]] }; }
  const bad = [];
  if (m.cameraId !== header.cameraId) bad.push('camera');
  if (m.height !== header.height) bad.push('height');
  if (m.windowStartMs !== header.windowStartMs || m.windowEndMs !== header.windowEndMs) bad.push('window');
  if (m.frames.some(f => !(header.windowStartMs <= f.timestampMs && f.timestampMs < header.windowEndMs))) bad.push('frame outside window');
  if (bad.length) codes.push(['manifest.header.mismatch', 'manifest disagrees with header on ' + bad.join(', ')]);
  // capture order: by (time, seq), and each track's numbers rising (video and audio interleave)
  let orderOk = true;
  const lastOfTrack = new Map();
  for (let i = 0; i < m.frames.length; i++) {
    const f = m.frames[i], p = m.frames[i - 1], t = trackOf(f.seq);
    if (p && !(f.timestampMs > p.timestampMs || (f.timestampMs === p.timestampMs && f.seq > p.seq))) orderOk = false;
    if (lastOfTrack.has(t) && !(f.seq > lastOfTrack.get(t))) orderOk = false;
    lastOfTrack.set(t, f.seq);
  }
  if (!orderOk) codes.push(['frame.order.invalid', 'manifest frames are not in capture order']);
  const { root, known } = framesRoot(header.cameraId, m.frames);
  if (root !== header.framesRoot || m.frames.length !== header.frameCount) {
    codes.push(['block.root.mismatch', 'manifest frames do not rebuild the anchored root and count']);
    return { manifest: m, trusted: false, codes };
  }
  codes.push(['block.root.match', '']);
  return { manifest: m, trusted: !bad.length && orderOk, codes, known };
}

// A stored multiproof -> leaf hashes (from `known` when the leaf is a verified manifest's) and
// (seq:ts:sha) keys. Throws on anything malformed.
function parseMultiproof(doc, known = new Map()) {
  if (!doc || typeof doc !== 'object') throw new Error('no multiproof');
  if (doc.leafEncoding && JSON.stringify(doc.leafEncoding) !== JSON.stringify(LEAF_ENCODING)) throw new Error('unexpected leafEncoding');
  if (!Array.isArray(doc.leaves) || !Array.isArray(doc.proof) || !Array.isArray(doc.proofFlags)) throw new Error('malformed multiproof');
  const hashes = [], keys = [];
  try {
    for (const v of doc.leaves) {
      if (!Array.isArray(v) || v.length !== 4) throw new Error('leaf is not 4 values');
      const cam = hex(unhex(v[0])), sha = hex(unhex(v[3]));
      const seq = Number(v[1]), ts = Number(v[2]);
      hashes.push(known.get(leafKey(cam, seq, ts, sha)) || fastLeafHash(v[0], v[1], v[2], v[3]));
      keys.push(`${seq}:${ts}:${sha}`);
    }
  } catch (e) { throw new Error(`malformed multiproof: ${e.message}`); }
  return { mp: { leaves: doc.leaves, proof: doc.proof, proofFlags: doc.proofFlags }, hashes, keys, keySet: new Set(keys) };
}

function uncoveredSpans(from, to, windows) {
  const out = [];
  let cursor = from;
  for (const [s, e] of [...windows].sort((a, b) => a[0] - b[0] || a[1] - b[1])) {
    if (e <= cursor) continue;
    if (s > cursor) out.push([cursor, Math.min(s, to)]);
    cursor = Math.max(cursor, e);
    if (cursor >= to) break;
  }
  if (cursor < to) out.push([cursor, to]);
  return out.filter(([a, b]) => a < b);
}

// (no Math.min(...vs): spreading an hour of samples into arguments overflows the stack)
const relative = vs => { if (!vs.length) return []; const m = vs.reduce((a, b) => (b < a ? b : a)); return vs.map(v => v - m); };
const sameList = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
const decodeKey = f => [f.dtsMs !== null ? f.dtsMs : f.timestampMs, f.seq];
const keyLE = (a, b) => a[0] < b[0] || (a[0] === b[0] && a[1] <= b[1]);
const byHeight = m => [...m.keys()].sort((a, b) => a - b);

function classifyDigest(actual, expected, anchored) {
  if (actual === expected) return null;
  if (actual !== null && anchored.has(actual)) return 'frame.order.invalid';
  return 'frame.digest.mismatch';
}

class Report {
  constructor() { this.findings = []; this.clips = []; this.tracks = {}; }
  add(code, message = '', height = null, extra = {}) {
    if (!(code in CODES)) throw new Error(`unknown code ${code}`);
    this.findings.push({ code, severity: CODES[code], message, height, ...extra });
  }
  has(severity) { return this.findings.some(f => f.severity === severity); }
  get verdict() {
    if (this.has('failure')) return 'failed';
    if (this.has('untrusted')) return 'untrusted';
    if (this.has('unchecked')) return 'partially_verified';
    if (this.has('gap')) return 'verified_with_declared_gaps';
    return 'verified';
  }
  // the same de-duplication as report.merge_findings
  dedupe() {
    const seen = new Set();
    this.findings = this.findings.filter(f => {
      const k = JSON.stringify([f.code, f.height, f.seq ?? null, f.camera ?? null, f.message]);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    return this;
  }
}

// ------------------------------------------------------------------ verifyEvidence, step by step
//
// Each step takes the values it needs and adds its findings to the report; the frame index
// (every frame of the trusted manifests) carries what later steps need to know about a frame:
// listed in a clip, carried byte-exact by a clip, carried raw, already failed.

function verifyEvidence(claim, facts, media, prefindings = []) {
  const report = new Report();
  for (const [code, msg, height = null, extra = {}] of prefindings) {
    report.add(code, msg, height, extra.camera === claim.cameraId ? { ...extra, camera: null } : extra);
  }
  if (!checkClaim(report, claim, facts)) return report.dedupe();
  const claimed = new Map(claim.blocks.map(b => [b.height, b]));
  checkRange(report, claim, facts, claimed);
  const { trusted, knownLeaves } = checkBlocks(report, claim.cameraId, claimed, facts.blocks, media.manifests);
  const index = indexFrames(claim.cameraId, trusted, claimed);
  const codecs = checkCodecSources(report, claim.codecSources, facts.codecBlocks, media.codecManifests);
  let matched = checkClips(report, claim.clips, index, media.clips, codecs);
  matched += checkRaw(report, claim.raw, index, media.rawDigests);
  checkProofs(report, index, facts, media.proofs, knownLeaves);
  checkCompleteness(report, claim, index, matched);
  checkPlayability(report, claim, index);
  checkGaps(report, claim, index);
  checkDeclaredOutages(report, claim, index, facts.cameraKeys || []);
  countTracks(report, index);
  return report.dedupe();
}

// The bundle's own claims that decide whether anything else can be checked.
function checkClaim(report, claim, facts) {
  if (claim.chainId !== facts.chainId) {
    report.add('chain.id.mismatch', `evidence anchored on chain ${claim.chainId}, RPC answers for ${facts.chainId}`);
    return false;
  }
  if (claim.cameraIp !== null && keccak(Buffer.from(claim.cameraIp, 'utf8')) !== claim.cameraId) {
    report.add('bundle.invalid', `camera ip ${claim.cameraIp} does not hash to camera id ${claim.cameraId}`);
  }
  if (claim.fromMs >= claim.toMs) { report.add('range.invalid', 'empty range'); return false; }
  return true;
}

function checkRange(report, claim, facts, claimed) {
  const inRange = facts.heightsInRange;
  if (!inRange.length) { report.add('range.empty', 'no block of this camera is anchored for any part of the range'); return; }
  const windows = inRange.map(h => facts.blocks.get(h)).filter(Boolean).map(b => [b.header.windowStartMs, b.header.windowEndMs]);
  for (const [a, b] of uncoveredSpans(claim.fromMs, claim.toMs, windows)) report.add('range.uncovered', `no anchored block covers ${a}..${b}`);
  for (const h of inRange) if (!claimed.has(h)) report.add('block.missing', `block ${h} is not in the evidence`, h);
}

function checkBlocks(report, cam, claimed, chainBlocksByHeight, manifests) {
  const manifestDigests = new Map();
  for (const [h, b] of chainBlocksByHeight) if (b) manifestDigests.set(b.header.manifestDigest, h);
  const trusted = new Map(), knownLeaves = new Map();
  for (const h of byHeight(claimed)) {
    const cb = chainBlocksByHeight.get(h);
    if (!cb) { report.add('block.root.unanchored', `no block of this camera is anchored at height ${h}`, h); continue; }
    const authority = checkBlockRecord(report, cam, claimed.get(h), cb);
    const prev = chainBlocksByHeight.get(h - 1);
    if (prev && claimed.has(h - 1) && cb.header.prevHash !== prev.blockHash) {
      report.add('block.chain.broken', `block ${h} does not link to block ${h - 1}`, h);
    }
    if (authority === null) continue;
    const mc = checkManifest(manifests.get(h) ?? null, authority, manifestDigests);
    for (const [code, msg] of mc.codes) report.add(code, msg, h);
    if (mc.trusted && mc.manifest) { trusted.set(h, mc.manifest); knownLeaves.set(h, mc.known); }
  }
  return { trusted, knownLeaves };
}

// Header, finality, disputes and transactions of one block; returns the authoritative header
// (one that hashes to the anchored block hash, the chain's record first) or null.
function checkBlockRecord(report, cam, bc, cb) {
  const h = bc.height, hdr = cb.header;
  const claimedHash = bc.header ? headerHash(bc.header) : null;
  const chainOk = headerHash(hdr) === cb.blockHash;
  const authority = chainOk ? hdr : (claimedHash === cb.blockHash ? bc.header : null);
  if (claimedHash !== cb.blockHash || !chainOk || hdr.cameraId !== cam || (bc.blockHash !== null && bc.blockHash !== cb.blockHash)) {
    report.add('block.header.mismatch', bc.header ? `header hashes to ${claimedHash}, anchored ${cb.blockHash}` : 'no header', h);
  } else report.add('block.header.match', '', h);
  if (cb.finalized) report.add('block.final', '', h);
  else report.add('block.not_final', cb.disputes ? `${cb.disputes} node(s) disputed it on record`
    : `${cb.attestations} attestation(s), below quorum`, h);
  if (cb.disputes) report.add('block.disputed', `${cb.disputes} node(s) disputed this block`, h);
  if (bc.anchorTx !== null && cb.anchorTx !== null && bc.anchorTx !== cb.anchorTx.toLowerCase()) {
    report.add('tx.anchor.mismatch', 'anchoring transaction differs from the chain\'s', h);
  }
  if (bc.attestTxs.length) {
    const a = new Set(bc.attestTxs), b = new Set(cb.attestTxs.map(t => t.toLowerCase()));
    if (a.size !== b.size || [...a].some(t => !b.has(t))) report.add('tx.attest.mismatch', 'attestation transactions differ from the chain\'s', h);
  }
  return authority;
}

const fkey = (h, c, s) => `${h}|${c}|${s}`;

// Every frame of the trusted manifests (the camera's own and their substitutions).
function indexFrames(cam, trusted, claimed) {
  const frames = new Map(), anchored = new Set();
  for (const [h, m] of trusted) {
    for (const f of m.frames) { frames.set(fkey(h, cam, f.seq), { height: h, camera: cam, ref: f, primary: true }); anchored.add(f.sha256); }
    for (const s of m.substitutions) for (const f of s.frames) {
      frames.set(fkey(h, s.cameraId, f.seq), { height: h, camera: s.cameraId, ref: f, primary: false }); anchored.add(f.sha256);
    }
  }
  const untrusted = new Set([...claimed.keys()].filter(h => !trusted.has(h)));
  return { cam, trusted, frames, anchored, claimed, untrusted };
}

// One failure per frame: the first reason found stands.
function failFrame(report, index, code, fr, msg) {
  if (fr.flagged) return;
  fr.flagged = true;
  report.add(code, msg, fr.height, { seq: fr.ref.seq, camera: fr.camera === index.cam ? null : fr.camera });
}

function checkCodecSources(report, sources, codecBlocks, codecManifests) {
  const usable = [];
  for (const s of sources) {
    const key = `${s.camera}|${s.height}`;
    const c = checkCodecSource(report, s, codecBlocks.get(key) ?? null, codecManifests.get(key) ?? null);
    if (c) usable.push(c);
  }
  return usable;
}

// A substitute camera's block and manifest, checked against the chain like the camera's own.
function checkCodecSource(report, s, cb, data) {
  const fail = (code, msg) => { report.add(code, msg, s.height, { camera: s.camera }); return null; };
  if (!cb) return fail('block.root.unanchored', `no block of camera ${s.camera} is anchored at height ${s.height}`);
  const claimedHash = headerHash(s.header);
  if (claimedHash !== cb.blockHash || headerHash(cb.header) !== cb.blockHash || s.blockHash !== cb.blockHash || cb.header.cameraId !== s.camera) {
    return fail('block.header.mismatch', `codec source header hashes to ${claimedHash}, anchored ${cb.blockHash}`);
  }
  if (data === null) return fail('manifest.missing', `no manifest for camera ${s.camera} block ${s.height}`);
  if (sha256(data) !== cb.header.manifestDigest) return fail('manifest.digest.mismatch', 'manifest does not hash to the anchored digest');
  let doc;
  try { doc = JSON.parse(data.toString('utf8')); } catch (e) { return fail('manifest.invalid', `manifest is not JSON: ${e.message}`); }
  if (!doc || typeof doc !== 'object' || doc.format !== MANIFEST_FORMAT) return fail('manifest.invalid', `not a ${MANIFEST_FORMAT} document`);
  return { camera: s.camera, height: s.height, windowStartMs: cb.header.windowStartMs, windowEndMs: cb.header.windowEndMs,
    extradata: parseCodec(doc).extradata };
}

function checkClips(report, clips, index, clipMedia, codecs) {
  let matched = 0;
  for (const clip of clips) matched += checkClip(report, clip, index, clipMedia.get(clip.path), codecs);
  return matched;
}

// One clip; returns how many of its packets matched anchored frames byte for byte.
function checkClip(report, clip, index, media, codecs) {
  const { listed, involvesUntrusted } = listClipFrames(report, clip, index);
  const row = { path: clip.path, kind: clip.kind, camera: clip.camera, reencoded: clip.reencoded, why: clip.why,
    frames: listed.length, samples: null, codec: null, pictures: null };
  report.clips.push(row);
  if (clip.reencoded) {
    row.pictures = 'unchecked';
    report.add('clip.pictures.unchecked', `${clip.path}: re-encoded; this verifier cannot decode it, so its pictures are not bound to anchored bytes`);
  }
  if (!media || !media.samples) {
    report.add('clip.invalid', `${clip.path}: ${media ? media.error : 'not in the evidence'}`);
    for (const fr of listed) if (fr) fr.flagged = true;
    return 0;
  }
  row.samples = media.samples.length;
  if (clip.audio.length) checkClipAudio(report, clip, index, media);
  if (clip.reencoded) { checkReencodedClip(report, clip, listed, media.samples); return 0; }
  row.codec = checkClipCodec(report, clip, listed[0], media, index, codecs);
  return checkRemuxedClip(report, clip, listed, media.samples, index, involvesUntrusted);
}

// A clip's audio track holds exactly the anchored audio packets it lists, in order (they travel
// raw too: this binds what a player plays to them).
function checkClipAudio(report, clip, index, media) {
  const expected = clip.audio.map(([h, seq]) => index.frames.get(fkey(h, clip.camera, seq))?.ref.sha256 ?? null);
  const got = media.audio || [];
  if (expected.includes(null) || got.length !== expected.length || got.some((d, i) => d !== expected[i])) {
    report.add('clip.audio.mismatch', `${clip.path}: its audio track holds ${got.length} packet(s), not the ${expected.length} anchored audio packet(s) it lists`);
  }
}

// Per track, the camera's frames presented; audio also as a finding.
function countTracks(report, index) {
  const counts = {};
  for (const fr of index.frames.values()) {
    if (!fr.primary || !(fr.inClip || fr.inRaw) || fr.flagged) continue;
    const name = TRACK_NAMES[trackOf(fr.ref.seq)] ?? `track${trackOf(fr.ref.seq)}`;
    counts[name] = (counts[name] || 0) + 1;
  }
  report.tracks = Object.fromEntries(Object.entries(counts).sort());
  if (counts.audio) report.add('track.audio', `${counts.audio} audio packet(s) verified against the anchored roots`, null, { count: counts.audio });
}

function listClipFrames(report, clip, index) {
  const listed = [];
  let involvesUntrusted = false;
  for (const [h, seq] of clip.frames) {
    const fr = index.frames.get(fkey(h, clip.camera, seq));
    if (!fr) {
      if (index.untrusted.has(h) || !index.claimed.has(h)) involvesUntrusted = true;
      else report.add('frame.unknown', `clip ${clip.path} lists a frame its manifest does not`, h, { seq });
    } else {
      fr.listed = true;
      if (clip.reencoded) fr.inReencoded = true;
      else fr.inClip = true;
    }
    listed.push(fr || null);
  }
  return { listed, involvesUntrusted };
}

function checkReencodedClip(report, clip, listed, samples) {
  report.add('clip.reencoded', `${clip.path} was re-encoded; original bytes are carried as raw frames`);
  const known = listed.filter(Boolean);
  const expTs = known.map(fr => fr.ref.timestampMs).sort((a, b) => a - b);
  const gotTs = samples.map(s => s.ptsMs).sort((a, b) => a - b);
  if (samples.length !== listed.length || (known.length && !sameList(relative(expTs), relative(gotTs)))) {
    report.add('clip.timing.mismatch', `${clip.path}: pictures at times that differ from the anchored frames`);
  }
}

// The clip's avcC must be the codec configuration anchored for the camera whose packets it carries:
// the camera's own manifest (block of the first frame), or a substitute's codec source.
function checkClipCodec(report, clip, first, media, index, codecs) {
  if (!first) return null;  // unknown frame or untrusted block: reported by their own rules
  let expected = null, source = null;
  if (clip.camera === index.cam) {
    expected = index.trusted.get(first.height).codec.extradata;
    source = `block ${first.height}'s manifest`;
  } else {
    const ts = first.ref.timestampMs;
    const c = codecs.find(x => x.camera === clip.camera && x.windowStartMs <= ts && ts < x.windowEndMs);
    if (c) { expected = c.extradata; source = `camera ${clip.camera} block ${c.height}'s manifest`; }
  }
  const mismatch = msg => { report.add('clip.codec.mismatch', `${clip.path}: ${msg}`); return 'mismatch'; };
  if (!source) return mismatch(`no verified codec source of camera ${clip.camera} covers this clip`);
  if (!expected) return mismatch(`${source} carries no avcC record`);
  if (!media.avcC) return mismatch(`no avcC record in the clip (sample entry ${media.sampleEntry})`);
  if (!media.avcC.equals(expected)) return mismatch(`avcC differs from the codec configuration in ${source}`);
  return 'match';
}

function checkRemuxedClip(report, clip, listed, samples, index, involvesUntrusted) {
  const known = listed.filter(Boolean);
  let clipOk = true;
  const keys = known.map(fr => decodeKey(fr.ref));
  for (let i = 1; i < keys.length; i++) {
    if (keyLE(keys[i], keys[i - 1])) { report.add('frame.order.invalid', `${clip.path} lists frames out of decode order`); clipOk = false; break; }
  }
  const pairs = samples.length === listed.length
    ? pairSamplesInPlace(report, clip, listed, samples, index)
    : pairSamplesByDigest(report, clip, known, samples, index, involvesUntrusted);
  if (samples.length !== listed.length || pairs.length !== known.length) clipOk = false;
  if (pairs.length) {
    const exp = relative(pairs.map(([fr]) => fr.ref.timestampMs));
    const got = relative(pairs.map(([, i]) => samples[i].ptsMs));
    if (!sameList(exp, got)) { clipOk = false; report.add('clip.timing.mismatch', `${clip.path}: packets presented at times other than captured`); }
  }
  if (clipOk && !involvesUntrusted) report.add('clip.packets.match', `${clip.path}: ${pairs.length} packets`);
  return pairs.length;
}

// As many samples as listed frames: sample i must be frame i.
function pairSamplesInPlace(report, clip, listed, samples, index) {
  const pairs = [];
  listed.forEach((fr, i) => {
    if (!fr) return;
    const code = classifyDigest(samples[i].sha256, fr.ref.sha256, index.anchored);
    if (code === null) pairs.push([fr, i]);
    else failFrame(report, index, code, fr, `${clip.path} sample ${i} hashes to ${samples[i].sha256}`);
  });
  return pairs;
}

// A sample count that differs: find each listed frame's packet by digest, report the rest.
function pairSamplesByDigest(report, clip, known, samples, index, involvesUntrusted) {
  const pairs = [];
  const pool = new Map();
  samples.forEach((s, i) => { if (!pool.has(s.sha256)) pool.set(s.sha256, []); pool.get(s.sha256).push(i); });
  for (const fr of known) {
    const idx = pool.get(fr.ref.sha256);
    if (idx && idx.length) pairs.push([fr, idx.shift()]);
    else failFrame(report, index, 'frame.missing', fr, `${clip.path} lacks this frame's packet`);
  }
  if (!involvesUntrusted) {
    for (const idx of pool.values()) for (const i of idx) report.add('frame.digest.mismatch', `${clip.path} sample ${i} is no anchored frame`);
  }
  const order = pairs.map(p => p[1]);
  if (order.some((v, i) => i > 0 && v < order[i - 1])) report.add('frame.order.invalid', `${clip.path} carries frames out of order`);
  return pairs;
}

function checkRaw(report, raw, index, rawDigests) {
  let matched = 0;
  for (const rc of raw) {
    const fr = index.frames.get(fkey(rc.height, rc.camera, rc.seq));
    if (!fr) {
      if (index.trusted.has(rc.height)) report.add('frame.unknown', `raw frame ${rc.path} is not in its manifest`, rc.height, { seq: rc.seq });
      continue;
    }
    fr.inRaw = true;
    const actual = rawDigests.get(rc.path) ?? null;
    if (actual === null) { failFrame(report, index, 'frame.missing', fr, `raw frame ${rc.path} is not in the evidence`); continue; }
    const code = classifyDigest(actual, fr.ref.sha256, index.anchored);
    if (code === null) matched += 1;
    else failFrame(report, index, code, fr, `raw frame ${rc.path} hashes to ${actual}`);
  }
  return matched;
}

function checkProofs(report, index, facts, proofs, knownLeaves) {
  const presentedByHeight = new Map();
  for (const fr of index.frames.values()) {
    if (!fr.primary || !(fr.listed || fr.inRaw)) continue;
    if (!presentedByHeight.has(fr.height)) presentedByHeight.set(fr.height, new Set());
    presentedByHeight.get(fr.height).add(`${fr.ref.seq}:${fr.ref.timestampMs}:${fr.ref.sha256}`);
  }
  for (const h of byHeight(index.trusted)) {
    const bc = index.claimed.get(h), cb = facts.blocks.get(h), proof = proofs.get(h) ?? null;
    const presented = presentedByHeight.get(h) || new Set();
    if (!presented.size && proof === null) continue;
    let parsed, ok;
    try {
      parsed = parseMultiproof(proof, knownLeaves.get(h));
      const root = headerHash(cb.header) === cb.blockHash ? cb.header.framesRoot : bc.header.framesRoot;
      ok = parsed.hashes.length > 0 &&
        processMultiProof({ leaves: parsed.hashes, proof: parsed.mp.proof, proofFlags: parsed.mp.proofFlags }) === root;
    } catch (e) { report.add('frame.proof.invalid', e.message, h); continue; }
    const onChain = facts.proofsOnChain.get(h);
    if (!ok || onChain === false) report.add('frame.proof.invalid', 'multiproof does not verify against the anchored root', h);
    else if ([...presented].some(k => !parsed.keySet.has(k))) report.add('frame.proof.invalid', 'presented frames not covered by the proof', h);
    else report.add('frame.proof.valid', `${parsed.keys.length} frames`, h);
  }
}

// Every anchored frame of the range is presented; a frame shown only re-encoded (or a substitute's)
// has its original bytes in the bundle.
function checkCompleteness(report, claim, index, matched) {
  for (const fr of index.frames.values()) {
    const inRange = claim.fromMs <= fr.ref.timestampMs && fr.ref.timestampMs < claim.toMs;
    if (fr.primary) {
      if (inRange && !(fr.inClip || fr.inRaw)) failFrame(report, index, 'frame.missing', fr, 'anchored frame of the range is not presented');
      else if (fr.inReencoded && !fr.inClip && !fr.inRaw) {
        failFrame(report, index, 'frame.missing', fr, 're-encoded frame\'s original bytes are not presented');
      }
    } else if ((inRange || fr.listed) && !(fr.inClip || fr.inRaw)) {
      failFrame(report, index, 'frame.missing', fr, 'substituted frame\'s original bytes are not presented');
    }
  }
  if (matched) report.add('frame.digest.match', `${matched} frame(s) hash to their anchored digests`, null, { count: matched });
}

function checkPlayability(report, claim, index) {
  const notPlayable = new Map();
  let preroll = 0;
  for (const fr of index.frames.values()) {
    if (fr.primary && fr.inRaw && !fr.inClip && !fr.inReencoded && trackOf(fr.ref.seq) === 0) notPlayable.set(fr.height, (notPlayable.get(fr.height) || 0) + 1);
    if (fr.primary && (fr.inClip || fr.inReencoded) && !(claim.fromMs <= fr.ref.timestampMs && fr.ref.timestampMs < claim.toMs)) preroll++;
  }
  for (const [h, n] of [...notPlayable].sort((a, b) => a[0] - b[0])) {
    report.add('frame.not_playable', `${n} verified frame(s) cannot be decoded`, h, { count: n });
  }
  if (preroll) report.add('clip.preroll', `${preroll} frame(s) outside the range make the clip decodable`, null, { count: preroll });
}

function checkGaps(report, claim, index) {
  const declared = [];
  for (const m of index.trusted.values()) for (const g of m.gaps) declared.push([g.fromSeq, g.toSeq]);
  for (const h of byHeight(index.trusted)) {
    for (const g of index.trusted.get(h).gaps) {
      if (!(g.fromMs < claim.toMs && g.toMs >= claim.fromMs)) continue;
      report.add('gap.declared', `seq ${g.fromSeq}-${g.toSeq} declared lost`, h);
      if (g.keyframeLost) report.add('gap.keyframe_lost', `seq ${g.fromSeq}-${g.toSeq} included a keyframe`, h);
      if (g.substituteCamera) report.add('gap.substituted', `seq ${g.fromSeq}-${g.toSeq} shown from camera ${g.substituteCamera}`, h);
    }
    const m = index.trusted.get(h);
    if (m.streamEnd === 'unended' && m.windowStartMs < claim.toMs && m.windowEndMs > claim.fromMs) {
      report.add('stream.unended', 'the camera\'s stream stopped in this block without a signed end', h);
    }
  }
  declared.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const primaries = [...index.frames.values()].filter(fr => fr.primary).sort((a, b) => a.ref.seq - b.ref.seq);
  for (let i = 1; i < primaries.length; i++) {
    const a = primaries[i - 1], b = primaries[i];
    if (b.ref.seq === a.ref.seq + 1 || b.height - a.height > 1 || trackOf(a.ref.seq) !== trackOf(b.ref.seq)) continue;
    if (!(a.ref.timestampMs < claim.toMs && b.ref.timestampMs > claim.fromMs)) continue;
    if (!coveredBy(a.ref.seq + 1, b.ref.seq - 1, declared)) report.add('gap.undeclared', `seq ${a.ref.seq + 1}-${b.ref.seq - 1} missing without a declared gap`, b.height);
  }
}

// Issue 10 (offchain/core/outages.py verify_proof, step for step): each outage the camera declared
// in a trusted manifest, its signature checked under the camera's device keys from the chain; one
// touching the range is a gap on record.
const CONTROL_DOMAIN = 'frameledger.control.v2';
const OUTAGE = { maxReason: 200, maxMs: 7 * 24 * 3600 * 1000, maxSeq: 2 ** 62 };
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

function outageOf(proof) {
  if (!proof || typeof proof !== 'object' || proof.domain !== CONTROL_DOMAIN) throw new Error('outage proof is not an object with the control signing domain');
  if (!('signedJson' in proof) || !('signature' in proof)) throw new Error('outage proof is malformed');
  const signed = Buffer.from(String(proof.signedJson), 'utf8');
  const sig = String(proof.signature);
  let m;
  try { m = JSON.parse(signed.toString('utf8')); } catch (e) { throw new Error(`outage proof is malformed: ${e.message}`); }
  if (!/^[0-9a-fA-F]{128}$/.test(sig) || !m || typeof m !== 'object' || Array.isArray(m)) throw new Error('outage proof has no 64-byte hex signature or no JSON object');
  if (m.type !== 'outage') throw new Error(`not an outage declaration (type ${JSON.stringify(m.type)})`);
  const reason = m.reason === undefined ? '' : m.reason;
  if (typeof m.camera !== 'string' || !m.camera) throw new Error('outage declaration without a camera');
  if (typeof reason !== 'string' || [...reason].length > OUTAGE.maxReason) throw new Error('outage reason is not a string of at most 200 characters');
  // JSON.parse reads 5.0 and 5e0 as the integer 5, where Python's json (and so the nodes and
  // offchain/core/outages.py) reads a float and refuses it: the signed text's own tokens decide.
  const text = signed.toString('utf8');
  const int = (k, hi) => {
    const tokens = [...text.matchAll(new RegExp(`"${k}"\\s*:\\s*([-+0-9.eE]+)`, 'g'))].map((t) => t[1]);
    if (!Number.isInteger(m[k]) || m[k] < 0 || m[k] >= hi || tokens.some((t) => !/^[0-9]+$/.test(t))) {
      throw new Error(`outage ${k} is not an integer in [0, ${hi})`);
    }
    return m[k];
  };
  const d = { camera: m.camera, afterSeq: int('afterSeq', OUTAGE.maxSeq), fromMs: int('fromMs', 2 ** 53), toMs: int('toMs', 2 ** 53), reason, signed, sig: Buffer.from(sig, 'hex') };
  if (!(d.fromMs < d.toMs)) throw new Error(`outage from ${d.fromMs} is not before to ${d.toMs}`);
  if (d.toMs - d.fromMs > OUTAGE.maxMs) throw new Error(`outage of ${d.toMs - d.fromMs} ms exceeds ${OUTAGE.maxMs} ms`);
  return d;
}

function signedByCamera(d, keys) {
  const data = Buffer.concat([Buffer.from(CONTROL_DOMAIN), d.signed]);
  return keys.some(k => {
    try {
      const key = crypto.createPublicKey({ key: Buffer.concat([SPKI_ED25519, k]), format: 'der', type: 'spki' });
      return crypto.verify(null, data, key, d.sig);
    } catch { return false; }
  });
}

function checkDeclaredOutages(report, claim, index, keys) {
  for (const h of byHeight(index.trusted)) {
    const m = index.trusted.get(h);
    for (const proof of m.declaredOutages) {
      let d;
      try { d = outageOf(proof); } catch (e) { report.add('camera.outage.invalid', e.message, h); continue; }
      if (d.camera !== m.cameraIp) { report.add('camera.outage.invalid', `declared by camera ${d.camera.slice(0, 64)}`, h); continue; }
      if (!(m.windowStartMs <= d.toMs && d.toMs < m.windowEndMs)) { report.add('camera.outage.invalid', `outage ends at ${d.toMs}, outside the block's window`, h); continue; }
      if (!signedByCamera(d, keys)) { report.add('camera.outage.signature.invalid', `outage after seq ${d.afterSeq}: no device key of the camera verifies its signature`, h); continue; }
      if (d.fromMs < claim.toMs && d.toMs > claim.fromMs) {
        report.add('camera.outage.declared', `the camera declared an outage after seq ${d.afterSeq}, ${d.fromMs}..${d.toMs}: ${d.reason}`, h);
      }
    }
  }
}

// Every device key the chain set for the camera (CameraRegistered / CameraKeyRotated logs of the
// consortium), read only when a presented manifest declares an outage (offchain/evidence/outage_keys.py).
const CAMERA_REGISTERED = 'CameraRegistered(bytes32,string,address,bytes32,bytes)';
const CAMERA_KEY_ROTATED = 'CameraKeyRotated(bytes32,bytes)';

async function cameraKeys(chain, consortium, camera) {
  const topics = [[keccak(Buffer.from(CAMERA_REGISTERED)), keccak(Buffer.from(CAMERA_KEY_ROTATED))], camera];
  const logs = await chain.rpc('eth_getLogs', [{ address: consortium, fromBlock: '0x0', toBlock: 'latest', topics }]);
  const keys = [];
  for (const lg of logs) {
    const data = unhex(lg.data);
    const slot = lg.topics[0].toLowerCase() === keccak(Buffer.from(CAMERA_REGISTERED)) ? 1 : 0;  // the bytes argument
    const off = Number(BigInt(hex(data.subarray(32 * slot, 32 * slot + 32))));
    const len = Number(BigInt(hex(data.subarray(off, off + 32))));
    keys.push(Buffer.from(data.subarray(off + 32, off + 32 + len)));
  }
  return keys;
}

// Whether a presented manifest carries a declared outage (then the camera's keys are read).
function declaresOutages(media) {
  for (const bytes of media.manifests.values()) if (bytes && bytes.includes('"declaredOutages"')) return true;
  return false;
}

// Whether the sorted declared spans cover every seq of [lo, hi]: O(spans), not O(hole size).
function coveredBy(lo, hi, spans) {
  let cursor = lo;
  for (const [a, b] of spans) {
    if (b < cursor) continue;
    if (a > cursor) return false;
    cursor = b + 1;
    if (cursor > hi) return true;
  }
  return cursor > hi;
}

// ------------------------------------------------------------------ the shell

function failed(code, message, findings = []) {
  const r = new Report();
  for (const [c, m] of findings) r.add(c, m);
  r.add(code, message);
  return r.dedupe();
}

// Manifests and proofs by height, codec sources' manifests by camera|height.
async function readIndexMembers(bundle, claim) {
  const manifests = new Map(), proofs = new Map(), codecManifests = new Map();
  for (const b of claim.blocks) {
    manifests.set(b.height, await readSmall(bundle, b.manifestPath, 'manifest'));
    const p = await readSmall(bundle, b.proofPath, 'proof');
    let proof = null;
    try { proof = p === null ? null : JSON.parse(p.toString('utf8')); } catch { proof = { malformed: true }; }
    proofs.set(b.height, proof);
  }
  for (const s of claim.codecSources) codecManifests.set(`${s.camera}|${s.height}`, await readSmall(bundle, s.manifestPath, 'manifest'));
  return { manifests, proofs, codecManifests };
}

async function readClip(bundle, name) {
  const r = await guarded(bundle, name, async () => {
    const src = await bundle.open(name, 'clip');
    try { return clipSamples(src); } catch (e) { return { samples: null, error: e.message }; } finally { src.close(); }
  });
  return r.samples ? r : { samples: null, error: r.error };
}

async function readMedia(bundle, claim) {
  const media = await readIndexMembers(bundle, claim);
  media.clips = new Map();
  for (const c of claim.clips) media.clips.set(c.path, await readClip(bundle, c.path));
  media.rawDigests = new Map();
  for (const r of claim.raw) media.rawDigests.set(r.path, await hashMember(bundle, r.path, 'frame'));
  return media;
}

async function proofsOnChain(chain, claim, blocks, proofs) {
  const out = new Map();
  for (const b of claim.blocks) {
    const cb = blocks.get(b.height), proof = proofs.get(b.height);
    if (!cb || proof === null) continue;
    let parsed;
    try { parsed = parseMultiproof(proof); } catch { continue; }  // judged (and reported) by verifyEvidence
    if (!parsed.hashes.length) continue;
    const r = await chain.tryCall('verifyFrames(bytes32,bytes32[],bool[],bytes32[])', ['bytes32', 'bytes32[]', 'bool[]', 'bytes32[]'],
      [cb.blockHash, parsed.mp.proof, parsed.mp.proofFlags, parsed.hashes], ['bool']);
    out.set(b.height, r === null ? false : Boolean(r[0]));
  }
  return out;
}

async function chainFacts(chain, claim, proofs, batchLedger = null) {
  let inRange = [];
  if (claim.fromMs < claim.toMs) {
    const [first, last] = await chain.call('blocksInRange(bytes32,uint64,uint64)', ['bytes32', 'uint64', 'uint64'],
      [claim.cameraId, BigInt(Math.max(0, claim.fromMs)), BigInt(Math.max(0, claim.toMs))], ['uint64', 'uint64']);
    for (let h = Number(first); h <= Number(last); h++) inRange.push(h);
  }
  const blocks = await chainBlocks(chain, claim.cameraId, [...inRange, ...claim.blocks.map(b => b.height)]);
  const codecBlocks = new Map();
  for (const cam of new Set(claim.codecSources.map(s => s.camera))) {
    const heights = claim.codecSources.filter(s => s.camera === cam).map(s => s.height);
    for (const [h, b] of await chainBlocks(chain, cam, heights)) codecBlocks.set(`${cam}|${h}`, b);
  }
  const facts = { chainId: chain.chainId, heightsInRange: inRange, blocks, codecBlocks, findings: [],
    proofsOnChain: await proofsOnChain(chain, claim, blocks, proofs) };
  if (!inRange.length && batchLedger && claim.fromMs < claim.toMs) {
    const probe = new BatchSource(chain, batchLedger, null, claim);
    const code = await chain.rpc('eth_getCode', [batchLedger, 'latest']);
    if (code && code !== '0x' && (await probe.recordsInRange(claim.fromMs, claim.toMs)).length) {
      facts.findings.push(['bundle.anchoring.mismatch', 'per-header bundle, but the VideoLedger holds no block of the range and the trusted BatchLedger anchors batches there']);
    }
  }
  return facts;
}

// Batch mode: the same facts from the trusted BatchLedger and the batch manifests in the bundle.
async function batchChainFacts(chain, claim, proofs, batchLedger, bundle) {
  const src = new BatchSource(chain, batchLedger, bundle, claim);
  const findings = [];
  const inRange = claim.fromMs < claim.toMs ? await src.heightsInRange(claim.cameraId, claim.fromMs, claim.toMs) : [];
  if (claim.fromMs < claim.toMs) {
    const [first, last] = await chain.call('blocksInRange(bytes32,uint64,uint64)', ['bytes32', 'uint64', 'uint64'],
      [claim.cameraId, BigInt(Math.max(0, claim.fromMs)), BigInt(Math.max(0, claim.toMs))], ['uint64', 'uint64']);
    if (Number(last) >= Number(first) && Number(first) >= 1) {
      findings.push(['bundle.anchoring.mismatch', 'batch-mode bundle, but the trusted VideoLedger anchors this camera\'s blocks of the range one by one']);
    }
  }
  const blocks = await src.blocks(claim.cameraId, [...inRange, ...claim.blocks.map(b => b.height)]);
  findings.push(...await src.chainRule(claim.cameraId, inRange));
  const codecBlocks = new Map();
  for (const cam of new Set(claim.codecSources.map(s => s.camera))) {
    const heights = claim.codecSources.filter(s => s.camera === cam).map(s => s.height);
    for (const [h, b] of await src.blocks(cam, heights)) codecBlocks.set(`${cam}|${h}`, b);
  }
  const onChain = new Map();
  for (const b of claim.blocks) {
    const cb = blocks.get(b.height), proof = proofs.get(b.height);
    if (!cb || proof === null || proof === undefined) continue;
    let parsed;
    try { parsed = parseMultiproof(proof); } catch { continue; }
    if (!parsed.hashes.length) continue;
    onChain.set(b.height, await src.verifyFrames(cb, parsed.mp, parsed.hashes));
  }
  return { chainId: chain.chainId, heightsInRange: inRange, blocks, codecBlocks, proofsOnChain: onChain, findings };
}

// The ledger to verify against and the trust findings; null ledger: the report to return.
async function trustedLedger(chain, trust, claim) {
  const t = await resolveLedger(chain, trust, claim);
  const code = await chain.rpc('eth_getCode', [t.ledger, 'latest']);
  if (!code || code === '0x') return { stop: ['bundle.contract.mismatch', `no contract at ${t.ledger} on this chain`], findings: t.findings };
  if (t.consortium) {
    const [c] = await chain.call('consortium()', [], [], ['address'], t.ledger);
    if (!sameAddress(c, t.consortium)) {
      t.findings.push(['bundle.contract.mismatch', `ledger ${t.ledger} belongs to consortium ${c}, trusted consortium is ${t.consortium}`]);
    }
  }
  return t;
}

// Verify one bundle against the chain at rpcUrl and the trusted deployments (loadTrust). Throws
// UsageError only for an unusable trust configuration; every problem of the bundle is a finding.
async function verifyBundle(bundlePath, rpcUrl, trust = loadTrust()) {
  let bundle;
  try { bundle = openBundle(bundlePath); } catch (e) { return failed('bundle.invalid', e.message); }
  try {
    const indexBytes = await readSmall(bundle, 'bundle.json', 'index');
    if (indexBytes === null) return failed('bundle.invalid', 'bundle.json is missing or unreadable', bundle.findings);
    let parsed;
    try { parsed = parseIndex(JSON.parse(indexBytes.toString('utf8'))); } catch (e) {
      return failed('bundle.invalid', e instanceof BundleError ? e.message : `malformed bundle.json: ${e.message}`, bundle.findings);
    }
    const { claim, duplicates } = parsed;
    const media = await readMedia(bundle, claim);
    const chain = new Chain(rpcUrl, null);
    let facts, ledger;
    try {
      chain.chainId = Number(BigInt(await chain.rpc('eth_chainId', [])));
      ledger = await trustedLedger(chain, trust, claim);
      if (ledger.stop) return failed(...ledger.stop, [...bundle.findings, ...ledger.findings]);
      chain.ledger = ledger.ledger;
      if (claim.anchoring === 'batch') {
        if (!ledger.batchLedger) return failed('bundle.contract.mismatch', 'a batch-mode bundle that names no BatchLedger, and none is trusted', [...bundle.findings, ...ledger.findings]);
        const code = await chain.rpc('eth_getCode', [ledger.batchLedger, 'latest']);
        if (!code || code === '0x') return failed('bundle.contract.mismatch', `no contract at ${ledger.batchLedger} on this chain`, [...bundle.findings, ...ledger.findings]);
        if (ledger.consortium) {
          const [c] = await chain.call('consortium()', [], [], ['address'], ledger.batchLedger);
          if (!sameAddress(c, ledger.consortium)) {
            ledger.findings.push(['bundle.contract.mismatch', `BatchLedger ${ledger.batchLedger} belongs to consortium ${c}, trusted consortium is ${ledger.consortium}`]);
          }
        }
        facts = await batchChainFacts(chain, claim, media.proofs, ledger.batchLedger, bundle);
      } else {
        facts = await chainFacts(chain, claim, media.proofs, ledger.batchLedger);
      }
      if (declaresOutages(media)) {
        const consortium = ledger.consortium || (await chain.call('consortium()', [], [], ['address'], ledger.ledger))[0];
        facts.cameraKeys = await cameraKeys(chain, consortium, claim.cameraId);
      }
    } catch (e) {
      if (e instanceof UsageError) throw e;
      return failed('chain.unavailable', `${rpcUrl}: ${e.message}`, [...bundle.findings, ...(ledger ? ledger.findings : [])]);
    }
    const pre = [...bundle.findings, ...ledger.findings, ...duplicates, ...facts.findings];
    const report = verifyEvidence(claim, facts, media, pre);
    report.ledger = ledger.ledger;
    return report;
  } finally {
    bundle.close();
  }
}

function render(report) {
  const lines = ['FrameLedger evidence bundle — independent JavaScript verifier', ''];
  const counts = new Map();
  for (const f of report.findings) {
    const k = `${f.severity}\t${f.code}`;
    counts.set(k, (counts.get(k) || 0) + (f.count || 1));
  }
  const rows = [...counts].map(([k, n]) => [...k.split('\t'), String(n)])
    .sort((a, b) => SEVERITY_ORDER.indexOf(a[0]) - SEVERITY_ORDER.indexOf(b[0]) || a[1].localeCompare(b[1]));
  const w = [0, 1, 2].map(i => Math.max(...[['severity', 'code', 'count'], ...rows].map(r => r[i].length)));
  const line = r => r.map((v, i) => (i === 2 ? v.padStart(w[i]) : v.padEnd(w[i]))).join('  ').trimEnd();
  lines.push(line(['severity', 'code', 'count']), w.map(n => '-'.repeat(n)).join('  '), ...rows.map(line), '');
  if (report.clips.length) {
    lines.push('clips:');
    for (const c of report.clips) {
      const how = c.reencoded ? `re-encoded (${c.why || 'reason not given'}), pictures unchecked` : 'byte-exact remux';
      lines.push(`  ${c.path}  ${c.kind}  ${c.frames} frames  ${how}`);
    }
    lines.push('');
  }
  for (const f of report.findings.filter(x => ['failure', 'untrusted', 'unchecked'].includes(x.severity))) {
    lines.push(`  ${f.code}${f.height !== null ? ` (block ${f.height}${f.seq !== undefined ? `, seq ${f.seq}` : ''})` : ''}: ${f.message}`);
  }
  lines.push(`VERDICT: ${report.verdict.toUpperCase().replace(/_/g, ' ')}`);
  return lines.join('\n') + '\n';
}

const USAGE = 'usage: verify_bundle.js BUNDLE.zip|DIR --rpc URL [--ledger 0xADDR] [--deployment FILE] [--trust FILE] [--json]\n' +
  '       verify_bundle.js --codes\n' +
  'exit: 0 verified, 3 verified with declared gaps, 1 failed, 4 untrusted, 5 partially verified, 2 usage error\n';

function parseArgs(argv) {
  const args = { json: false, rpc: process.env.FRAMELEDGER_RPC || null, ledger: null, deployment: null, trust: null, bundle: null };
  const valued = { '--rpc': 'rpc', '--ledger': 'ledger', '--deployment': 'deployment', '--trust': 'trust' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') args.json = true;
    else if (a === '--codes') args.codes = true;
    else if (a === '-h' || a === '--help') args.help = true;
    else if (valued[a]) {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      args[valued[a]] = argv[++i];
    } else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else if (!args.bundle) args.bundle = a;
    else throw new UsageError(`unexpected argument ${a}`);
  }
  return args;
}

async function main(argv) {
  try {
    const args = parseArgs(argv);
    if (args.help) { process.stdout.write(USAGE); return 0; }
    if (args.codes) { process.stdout.write(JSON.stringify(CODES, null, 1) + '\n'); return 0; }
    if (!args.bundle || !args.rpc) throw new UsageError('a bundle and --rpc are required');
    const trust = loadTrust(args);
    const report = await verifyBundle(args.bundle, args.rpc, trust);
    if (args.json) {
      const codes = [...new Set(report.findings.map(f => f.code))].sort();
      process.stdout.write(JSON.stringify({ verdict: report.verdict, producedBy: 'scripts/verify_bundle.js', ledger: report.ledger ?? null,
        codes, clips: report.clips, findings: report.findings, tracks: report.tracks ?? {} }, null, 1) + '\n');
    } else process.stdout.write(render(report));
    return VERDICT_EXIT[report.verdict];
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`verify_bundle.js: ${e.message}\n${e.message.startsWith('a bundle') ? USAGE : ''}`);
    return 2;
  }
}

// This process's peak resident set (VmHWM: of this program only, unlike getrusage's maxRSS, which
// keeps the parent's resident set from before exec). For the memory bound test and bench.
function peakRssKiB() {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch { /* not Linux */ }
  return process.resourceUsage().maxRSS;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(code => {
    if (process.env.FRAMELEDGER_VERIFY_PEAK_RSS) process.stderr.write(`peak RSS ${peakRssKiB()} KiB\n`);
    process.exitCode = code;
  }, err => {
    process.stderr.write(`verify_bundle.js: internal error: ${err && err.message ? err.message : err}\n`);
    process.exitCode = 1;
  });
}

module.exports = { verifyBundle, verifyEvidence, clipSamples, openBundle, loadTrust, trustedFor, parseIndex, unsafeReason, Report,
  readSmall, hashMember, CODES, CODE_TABLE, LIMITS, MEMBER_LIMITS, BundleError, UsageError, batchTree, parseBatchManifest,
  canonicalJson, outageOf };
