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
// It applies the rules of offchain/evidence/verify.py step for step and prints the same status
// codes (docs/EVIDENCE.md lists them). The chain is the authority: headers are compared with the
// ones anchored at their heights, manifests with anchored digests (their frames rebuilt into a
// StandardMerkleTree with the library's makeMerkleTree), multiproofs with anchored roots (locally
// with the library's processMultiProof and on chain with VideoLedger.verifyFrames), clip packets
// and raw frames with the manifests' SHA-256.
//
// usage: node scripts/verify_bundle.js BUNDLE.zip|DIR --rpc URL [--ledger 0xADDRESS] [--json]
//        node scripts/verify_bundle.js --codes      (the status code table, as JSON)
// exit:  0 verified, 3 verified with declared gaps, 1 failed, 2 usage error
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const { standardLeafHash } = require('@openzeppelin/merkle-tree/dist/hashes');
const { makeMerkleTree, processMultiProof } = require('@openzeppelin/merkle-tree/dist/core');
const { encode: abiEncode, decode: abiDecode } = require('@metamask/abi-utils');
const { keccak256 } = require('ethereum-cryptography/keccak');

const BUNDLE_FORMAT = 'frameledger.evidence-bundle/1';
const MANIFEST_FORMAT = 'frameledger.manifest/1';
const FRAME_FIELDS = ['seq', 'timestampMs', 'sha256', 'keyframe', 'size', 'dtsMs'];
const LEAF_ENCODING = ['bytes32', 'uint64', 'uint64', 'bytes32'];
const HEADER_TYPES = ['bytes32', 'uint64', 'bytes32', 'uint64', 'uint64', 'uint32', 'bytes32', 'bytes32', 'address'];
const ZERO32 = '0x' + '00'.repeat(32);

// Same table as offchain/evidence/report.py (a test keeps them equal): code -> severity.
const CODES = {
  'block.header.match': 'success', 'block.final': 'success', 'manifest.digest.match': 'success',
  'block.root.match': 'success', 'frame.proof.valid': 'success', 'frame.digest.match': 'success',
  'clip.packets.match': 'success',
  'bundle.invalid': 'failure', 'bundle.contract.mismatch': 'failure', 'chain.unavailable': 'failure',
  'chain.id.mismatch': 'failure', 'camera.unknown': 'failure', 'range.invalid': 'failure', 'range.empty': 'failure',
  'block.missing': 'failure', 'block.root.unanchored': 'failure', 'block.header.mismatch': 'failure',
  'block.chain.broken': 'failure', 'block.not_final': 'failure', 'block.root.mismatch': 'failure',
  'tx.anchor.mismatch': 'failure', 'tx.attest.mismatch': 'failure', 'manifest.missing': 'failure',
  'manifest.digest.mismatch': 'failure', 'manifest.order.invalid': 'failure', 'manifest.header.mismatch': 'failure',
  'manifest.invalid': 'failure', 'frame.missing': 'failure', 'frame.digest.mismatch': 'failure',
  'frame.order.invalid': 'failure', 'frame.unknown': 'failure', 'frame.proof.invalid': 'failure',
  'clip.invalid': 'failure', 'clip.undecodable': 'failure', 'clip.timing.mismatch': 'failure',
  'gap.undeclared': 'failure',
  'gap.declared': 'gap', 'gap.keyframe_lost': 'gap', 'gap.substituted': 'gap', 'range.uncovered': 'gap',
  'block.disputed': 'warning', 'store.block.corrupt': 'warning', 'frame.not_playable': 'warning',
  'clip.reencode.failed': 'warning', 'bundle.contract.unpinned': 'warning',
  'clip.reencoded': 'info', 'clip.preroll': 'info',
};

class BundleError extends Error {}

// ------------------------------------------------------------------ bytes and hashes

const hex = u8 => '0x' + Buffer.from(u8).toString('hex');
const unhex = s => Buffer.from(String(s).replace(/^0x/i, ''), 'hex');
const sha256 = b => '0x' + crypto.createHash('sha256').update(b).digest('hex');
const keccak = b => hex(keccak256(b instanceof Uint8Array ? b : Buffer.from(b)));
const selector = sig => keccak(Buffer.from(sig)).slice(0, 10);
const word = n => BigInt(n).toString(16).padStart(64, '0');

function headerHash(h) {
  return keccak(abiEncode(HEADER_TYPES, [h.cameraId, BigInt(h.height), h.prevHash, BigInt(h.windowStartMs),
    BigInt(h.windowEndMs), BigInt(h.frameCount), h.framesRoot, h.manifestDigest, h.proposer]));
}

function headerFromJson(d) {
  const b32 = s => { const b = unhex(s); if (b.length !== 32) throw new Error('bad bytes32'); return hex(b); };
  const int = v => { const n = Number(v); if (!Number.isInteger(n)) throw new Error('bad int'); return n; };
  return {
    cameraId: b32(d.cameraId), height: int(d.height), prevHash: b32(d.prevHash), windowStartMs: int(d.windowStartMs),
    windowEndMs: int(d.windowEndMs), frameCount: int(d.frameCount), framesRoot: b32(d.framesRoot),
    manifestDigest: b32(d.manifestDigest), proposer: String(d.proposer),
  };
}

// ------------------------------------------------------------------ zip (or directory) reading

class Bundle {
  constructor(p) {
    this.path = p;
    this.entries = null;
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) return;
    if (!fs.existsSync(p)) throw new BundleError(`${p}: no such file or directory`);
    this.fd = fs.openSync(p, 'r');
    this.size = fs.fstatSync(this.fd).size;
    this.entries = this.readCentralDirectory();
  }
  readAt(pos, len) {
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const n = fs.readSync(this.fd, buf, got, len - got, pos + got);
      if (n === 0) throw new BundleError('truncated zip');
      got += n;
    }
    return buf;
  }
  readCentralDirectory() {
    const tailLen = Math.min(this.size, 65557);
    const tail = this.readAt(this.size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
    if (eocd < 0) throw new BundleError(`${this.path} is not a zip (no end of central directory)`);
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const loc = eocd - 20;
      if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw new BundleError('zip64 locator missing');
      const z64 = Number(tail.readBigUInt64LE(loc + 8));
      const rec = this.readAt(z64, 56);
      if (rec.readUInt32LE(0) !== 0x06064b50) throw new BundleError('bad zip64 end record');
      count = Number(rec.readBigUInt64LE(32));
      cdSize = Number(rec.readBigUInt64LE(40));
      cdOffset = Number(rec.readBigUInt64LE(48));
    }
    const cd = this.readAt(cdOffset, cdSize);
    const entries = new Map();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new BundleError('bad central directory entry');
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let comp = cd.readUInt32LE(p + 20);
      let uncomp = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      let offset = cd.readUInt32LE(p + 42);
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
      entries.set(name, { method, crc, comp, uncomp, offset });
      p = extraEnd + commentLen;
    }
    return entries;
  }
  safe(name) {
    if (typeof name !== 'string' || !name || name.startsWith('/') || name.split(/[\\/]/).includes('..')) {
      throw new BundleError(`unsafe member name ${JSON.stringify(name)}`);
    }
    return name;
  }
  read(name) {
    this.safe(name);
    if (this.entries === null) {
      const p = path.join(this.path, name);
      if (!fs.existsSync(p) || !fs.statSync(p).isFile()) throw new BundleError(`${name} is not in the bundle`);
      return fs.readFileSync(p);
    }
    const ent = this.entries.get(name);
    if (!ent) throw new BundleError(`${name} is not in the bundle`);
    const local = this.readAt(ent.offset, 30);
    if (local.readUInt32LE(0) !== 0x04034b50) throw new BundleError(`${name}: bad local header`);
    const start = ent.offset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    const raw = this.readAt(start, ent.comp);
    let data;
    if (ent.method === 0) data = raw;
    else if (ent.method === 8) {
      try { data = zlib.inflateRawSync(raw); } catch (e) { throw new BundleError(`${name}: ${e.message}`); }
    } else throw new BundleError(`${name}: unsupported compression method ${ent.method}`);
    if (data.length !== ent.uncomp) throw new BundleError(`${name}: size mismatch`);
    if (typeof zlib.crc32 === 'function' && (zlib.crc32(data) >>> 0) !== ent.crc) throw new BundleError(`${name}: CRC mismatch`);
    return data;
  }
  readOrNull(name) {
    if (!name) return null;
    try { return this.read(name); } catch (e) { if (e instanceof BundleError) return null; throw e; }
  }
  close() { if (this.fd !== undefined) fs.closeSync(this.fd); }
}

// ------------------------------------------------------------------ MP4 sample tables

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
const child = (buf, box, type) => boxes(buf, box.start, box.end).find(b => b.type === type);

// Samples of the first video track, in file (decode) order: { sha256, ptsMs }.
function clipSamples(buf) {
  const moov = boxes(buf, 0, buf.length).find(b => b.type === 'moov');
  if (!moov) throw new Error('no moov box');
  if (boxes(buf, moov.start, moov.end).some(b => b.type === 'mvex')) throw new Error('fragmented MP4 is not supported');
  for (const trak of boxes(buf, moov.start, moov.end).filter(b => b.type === 'trak')) {
    const mdia = child(buf, trak, 'mdia');
    const hdlr = mdia && child(buf, mdia, 'hdlr');
    if (!hdlr || buf.toString('latin1', hdlr.start + 8, hdlr.start + 12) !== 'vide') continue;
    const mdhd = child(buf, mdia, 'mdhd');
    const timescale = buf[mdhd.start] === 1 ? buf.readUInt32BE(mdhd.start + 20) : buf.readUInt32BE(mdhd.start + 12);
    const stbl = child(buf, child(buf, mdia, 'minf'), 'stbl');
    const stsz = child(buf, stbl, 'stsz');
    const fixed = buf.readUInt32BE(stsz.start + 4);
    const n = buf.readUInt32BE(stsz.start + 8);
    const sizes = [];
    for (let i = 0; i < n; i++) sizes.push(fixed || buf.readUInt32BE(stsz.start + 12 + 4 * i));
    const co = child(buf, stbl, 'stco') || child(buf, stbl, 'co64');
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
    const offsets = [];
    for (let c = 0, r = 0; c < chunks.length && offsets.length < n; c++) {
      while (r + 1 < runs.length && runs[r + 1].first <= c + 1) r++;
      let off = chunks[c];
      for (let k = 0; k < runs[r].per && offsets.length < n; k++) { offsets.push(off); off += sizes[offsets.length - 1]; }
    }
    const stts = child(buf, stbl, 'stts');
    const dts = [];
    let t = 0;
    for (let i = 0, m = buf.readUInt32BE(stts.start + 4); i < m; i++) {
      const cnt = buf.readUInt32BE(stts.start + 8 + 8 * i), delta = buf.readUInt32BE(stts.start + 12 + 8 * i);
      for (let k = 0; k < cnt; k++) { dts.push(t); t += delta; }
    }
    const ctts = child(buf, stbl, 'ctts');
    const cts = new Array(n).fill(0);
    if (ctts) {
      const signed = buf[ctts.start] === 1;
      let s = 0;
      for (let i = 0, m = buf.readUInt32BE(ctts.start + 4); i < m; i++) {
        const cnt = buf.readUInt32BE(ctts.start + 8 + 8 * i);
        const off = signed ? buf.readInt32BE(ctts.start + 12 + 8 * i) : buf.readUInt32BE(ctts.start + 12 + 8 * i);
        for (let k = 0; k < cnt && s < n; k++) cts[s++] = off;
      }
    }
    const out = [];
    for (let i = 0; i < n; i++) {
      if (offsets[i] + sizes[i] > buf.length) throw new Error('sample outside the file');
      out.push({ sha256: sha256(buf.subarray(offsets[i], offsets[i] + sizes[i])),
        ptsMs: Math.round(((dts[i] || 0) + cts[i]) * 1000 / timescale) });
    }
    return out;
  }
  throw new Error('no video track');
}

// ------------------------------------------------------------------ JSON-RPC

class Chain {
  constructor(url, ledger) { this.url = url; this.ledger = ledger; this.id = 0; }
  async rpc(method, params) {
    const res = await fetch(this.url, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++this.id, method, params }) });
    const body = await res.json();
    if (body.error) { const e = new Error(`${method}: ${body.error.message}`); e.rpc = body.error; throw e; }
    return body.result;
  }
  async call(sig, types, values, returns) {
    const data = selector(sig) + Buffer.from(abiEncode(types, values)).toString('hex');
    const out = await this.rpc('eth_call', [{ to: this.ledger, data }, 'latest']);
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

async function chainBlocks(chain, camera, heights) {
  const out = new Map();
  heights = [...new Set(heights)].filter(h => h >= 1).sort((a, b) => a - b);
  if (!heights.length) return out;
  const [length] = await chain.call('chainLength(bytes32)', ['bytes32'], [camera], ['uint64']);
  const found = [];
  for (const h of heights) {
    if (BigInt(h) > length) { out.set(h, null); continue; }
    const [bh] = await chain.call('blockHashAt(bytes32,uint64)', ['bytes32', 'uint64'], [camera, BigInt(h)], ['bytes32']);
    const rec = await chain.call('getBlock(bytes32)', ['bytes32'],
      [bh], ['((bytes32,uint64,bytes32,uint64,uint64,uint32,bytes32,bytes32,address),uint64,uint16,uint16,bool)']);
    const [hdr, anchoredAt, attestations, disputes, finalized] = rec[0];
    const header = {
      cameraId: hex(hdr[0]), height: Number(hdr[1]), prevHash: hex(hdr[2]), windowStartMs: Number(hdr[3]),
      windowEndMs: Number(hdr[4]), frameCount: Number(hdr[5]), framesRoot: hex(hdr[6]), manifestDigest: hex(hdr[7]),
      proposer: hdr[8],
    };
    found.push(h);
    out.set(h, { height: h, blockHash: hex(bh), header, anchoredAt: Number(anchoredAt), attestations: Number(attestations),
      disputes: Number(disputes), finalized: Boolean(finalized), anchorTx: null, attestTxs: [] });
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

// ------------------------------------------------------------------ pure rules (verify.py)

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
    };
  } catch (e) { throw new Error(`malformed manifest: ${e.message}`); }
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
  let orderOk = true;
  for (let i = 1; i < m.frames.length; i++) {
    if (!(m.frames[i].seq > m.frames[i - 1].seq && m.frames[i].timestampMs >= m.frames[i - 1].timestampMs)) orderOk = false;
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

function classifyDigest(actual, expected, anchored) {
  if (actual === expected) return null;
  if (actual !== null && anchored.has(actual)) return 'frame.order.invalid';
  return 'frame.digest.mismatch';
}

class Report {
  constructor() { this.findings = []; }
  add(code, message = '', height = null, extra = {}) {
    if (!(code in CODES)) throw new Error(`unknown code ${code}`);
    this.findings.push({ code, severity: CODES[code], message, height, ...extra });
  }
  get verdict() {
    if (this.findings.some(f => f.severity === 'failure')) return 'failed';
    if (this.findings.some(f => f.severity === 'gap')) return 'verified_with_declared_gaps';
    return 'verified';
  }
}

function verifyEvidence(claim, chain, clips, rawDigests, { pinned, prefindings = [] }) {
  const report = new Report();
  const cam = claim.cameraId;
  for (const [code, msg, height] of prefindings) report.add(code, msg, height);
  if (!pinned) report.add('bundle.contract.unpinned', `trusting the ledger address in the evidence: ${claim.ledger}`);
  if (claim.chainId !== null && claim.chainId !== chain.chainId) {
    report.add('chain.id.mismatch', `evidence anchored on chain ${claim.chainId}, RPC answers for ${chain.chainId}`);
    return report;
  }
  if (claim.cameraIp !== null && keccak(Buffer.from(claim.cameraIp, 'utf8')) !== cam) {
    report.add('bundle.invalid', `camera ip ${claim.cameraIp} does not hash to camera id ${cam}`);
  }
  if (claim.fromMs >= claim.toMs) { report.add('range.invalid', 'empty range'); return report; }

  const inRange = chain.heightsInRange;
  if (!inRange.length) report.add('range.empty', 'no block of this camera is anchored for any part of the range');
  if (inRange.length) {
    const windows = inRange.map(h => chain.blocks.get(h)).filter(Boolean).map(b => [b.header.windowStartMs, b.header.windowEndMs]);
    for (const [a, b] of uncoveredSpans(claim.fromMs, claim.toMs, windows)) report.add('range.uncovered', `no anchored block covers ${a}..${b}`);
  }
  const claimed = new Map();
  for (const bc of claim.blocks) {
    if (claimed.has(bc.height)) report.add('bundle.invalid', `block ${bc.height} presented twice`, bc.height);
    claimed.set(bc.height, bc);
  }
  for (const h of inRange) if (!claimed.has(h)) report.add('block.missing', `block ${h} is not in the evidence`, h);

  const manifestDigests = new Map();
  for (const [h, b] of chain.blocks) if (b) manifestDigests.set(b.header.manifestDigest, h);

  const trusted = new Map();
  const knownLeaves = new Map();
  for (const h of [...claimed.keys()].sort((a, b) => a - b)) {
    const bc = claimed.get(h);
    const cb = chain.blocks.get(h);
    if (!cb) { report.add('block.root.unanchored', `no block of this camera is anchored at height ${h}`, h); continue; }
    const hdr = cb.header;
    // authoritative header: one that hashes to the anchored block hash (chain's record first)
    const claimedHash = bc.header ? headerHash(bc.header) : null;
    const chainOk = headerHash(hdr) === cb.blockHash;
    const authority = chainOk ? hdr : (claimedHash === cb.blockHash ? bc.header : null);
    if (claimedHash !== cb.blockHash || !chainOk || hdr.cameraId !== cam || (bc.blockHash !== null && bc.blockHash.toLowerCase() !== cb.blockHash)) {
      report.add('block.header.mismatch', bc.header ? `header hashes to ${claimedHash}, anchored ${cb.blockHash}` : 'malformed header', h);
    } else report.add('block.header.match', '', h);
    if (cb.finalized) report.add('block.final', '', h);
    else report.add('block.not_final', `${cb.attestations} attestation(s), below quorum`, h);
    if (cb.disputes) report.add('block.disputed', `${cb.disputes} node(s) disputed this block`, h);
    if (bc.anchorTx !== null && cb.anchorTx !== null && bc.anchorTx.toLowerCase() !== cb.anchorTx.toLowerCase()) {
      report.add('tx.anchor.mismatch', 'anchoring transaction differs from the chain\'s', h);
    }
    if (bc.attestTxs.length) {
      const a = new Set(bc.attestTxs.map(t => t.toLowerCase())), b = new Set(cb.attestTxs.map(t => t.toLowerCase()));
      if (a.size !== b.size || [...a].some(t => !b.has(t))) report.add('tx.attest.mismatch', 'attestation transactions differ from the chain\'s', h);
    }
    const prev = chain.blocks.get(h - 1);
    if (prev && claimed.has(h - 1) && hdr.prevHash !== prev.blockHash) report.add('block.chain.broken', `block ${h} does not link to block ${h - 1}`, h);
    if (authority === null) continue;
    const mc = checkManifest(bc.manifest, authority, manifestDigests);
    for (const [code, msg] of mc.codes) report.add(code, msg, h);
    if (mc.trusted && mc.manifest) { trusted.set(h, mc.manifest); knownLeaves.set(h, mc.known); }
  }

  // index every frame of the trusted manifests
  const frames = new Map();
  const fkey = (h, c, s) => `${h}|${c}|${s}`;
  const anchored = new Set();
  for (const [h, m] of trusted) {
    for (const f of m.frames) { frames.set(fkey(h, cam, f.seq), { height: h, camera: cam, ref: f, primary: true }); anchored.add(f.sha256); }
    for (const s of m.substitutions) for (const f of s.frames) {
      frames.set(fkey(h, s.cameraId, f.seq), { height: h, camera: s.cameraId, ref: f, primary: false }); anchored.add(f.sha256);
    }
  }
  const untrusted = new Set([...claimed.keys()].filter(h => !trusted.has(h)));
  const failFrame = (code, fr, msg) => {
    if (fr.flagged) return;
    fr.flagged = true;
    report.add(code, msg, fr.height, { seq: fr.ref.seq, camera: fr.camera === cam ? null : fr.camera });
  };
  let matchedBytes = 0;

  for (const clip of claim.clips) {
    const listed = [];
    let involvesUntrusted = false;
    for (const [h, seq] of clip.frames) {
      const fr = frames.get(fkey(h, clip.camera, seq));
      if (!fr) {
        if (untrusted.has(h) || !claimed.has(h)) involvesUntrusted = true;
        else report.add('frame.unknown', `clip ${clip.path} lists a frame its manifest does not`, h, { seq });
      } else {
        fr.listed = true;
        if (!clip.reencoded) fr.inClip = true;
      }
      listed.push(fr || null);
    }
    const cs = clips.get(clip.path);
    if (!cs || !cs.samples) {
      report.add('clip.invalid', `${clip.path}: ${cs ? cs.error : 'not in the evidence'}`);
      for (const fr of listed) if (fr) fr.flagged = true;
      continue;
    }
    const samples = cs.samples;
    const known = listed.filter(Boolean);
    let clipOk = true;
    if (clip.reencoded) {
      report.add('clip.reencoded', `${clip.path} was re-encoded; original bytes are carried as raw frames`);
      const expTs = known.map(fr => fr.ref.timestampMs).sort((a, b) => a - b);
      const gotTs = samples.map(s => s.ptsMs).sort((a, b) => a - b);
      if (samples.length !== listed.length || (known.length && !sameList(relative(expTs), relative(gotTs)))) {
        report.add('clip.timing.mismatch', `${clip.path}: pictures at times that differ from the anchored frames`);
      }
      continue;
    }
    const keys = known.map(fr => decodeKey(fr.ref));
    for (let i = 1; i < keys.length; i++) {
      if (keyLE(keys[i], keys[i - 1])) { report.add('frame.order.invalid', `${clip.path} lists frames out of decode order`); clipOk = false; break; }
    }
    const pairs = [];
    if (samples.length === listed.length) {
      listed.forEach((fr, i) => {
        if (!fr) return;
        const code = classifyDigest(samples[i].sha256, fr.ref.sha256, anchored);
        if (code === null) pairs.push([fr, i]);
        else { clipOk = false; failFrame(code, fr, `${clip.path} sample ${i} hashes to ${samples[i].sha256}`); }
      });
    } else {
      clipOk = false;
      const pool = new Map();
      samples.forEach((s, i) => { if (!pool.has(s.sha256)) pool.set(s.sha256, []); pool.get(s.sha256).push(i); });
      for (const fr of known) {
        const idx = pool.get(fr.ref.sha256);
        if (idx && idx.length) pairs.push([fr, idx.shift()]);
        else failFrame('frame.missing', fr, `${clip.path} lacks this frame's packet`);
      }
      if (!involvesUntrusted) {
        for (const idx of pool.values()) for (const i of idx) report.add('frame.digest.mismatch', `${clip.path} sample ${i} is no anchored frame`);
      }
      const order = pairs.map(p => p[1]);
      if (order.some((v, i) => i > 0 && v < order[i - 1])) report.add('frame.order.invalid', `${clip.path} carries frames out of order`);
    }
    if (pairs.length) {
      const exp = relative(pairs.map(([fr]) => fr.ref.timestampMs));
      const got = relative(pairs.map(([, i]) => samples[i].ptsMs));
      if (!sameList(exp, got)) { clipOk = false; report.add('clip.timing.mismatch', `${clip.path}: packets presented at times other than captured`); }
    }
    matchedBytes += pairs.length;
    if (clipOk && !involvesUntrusted) report.add('clip.packets.match', `${clip.path}: ${pairs.length} packets`);
  }

  for (const rc of claim.raw) {
    const fr = frames.get(fkey(rc.height, rc.camera, rc.seq));
    if (!fr) {
      if (trusted.has(rc.height)) report.add('frame.unknown', `raw frame ${rc.path} is not in its manifest`, rc.height, { seq: rc.seq });
      continue;
    }
    fr.inRaw = true;
    const actual = rawDigests.get(rc.path);
    if (actual === null || actual === undefined) { failFrame('frame.missing', fr, `raw frame ${rc.path} is not in the evidence`); continue; }
    const code = classifyDigest(actual, fr.ref.sha256, anchored);
    if (code === null) matchedBytes += 1;
    else failFrame(code, fr, `raw frame ${rc.path} hashes to ${actual}`);
  }

  for (const h of [...trusted.keys()].sort((a, b) => a - b)) {
    const bc = claimed.get(h), cb = chain.blocks.get(h);
    const presented = new Set();
    for (const fr of frames.values()) {
      if (fr.height === h && fr.primary && (fr.listed || fr.inRaw)) presented.add(`${fr.ref.seq}:${fr.ref.timestampMs}:${fr.ref.sha256}`);
    }
    if (!presented.size && bc.proof === null) continue;
    let parsed, ok;
    try {
      parsed = parseMultiproof(bc.proof, knownLeaves.get(h));
      const root = headerHash(cb.header) === cb.blockHash ? cb.header.framesRoot : bc.header.framesRoot;
      ok = parsed.hashes.length > 0 &&
        processMultiProof({ leaves: parsed.hashes, proof: parsed.mp.proof, proofFlags: parsed.mp.proofFlags }) === root;
    } catch (e) { report.add('frame.proof.invalid', e.message, h); continue; }
    const onChain = chain.proofsOnChain.get(h);
    if (!ok || onChain === false) report.add('frame.proof.invalid', 'multiproof does not verify against the anchored root', h);
    else if ([...presented].some(k => !parsed.keySet.has(k))) report.add('frame.proof.invalid', 'presented frames not covered by the proof', h);
    else report.add('frame.proof.valid', `${parsed.keys.length} frames`, h);
  }

  for (const fr of frames.values()) {
    const inRangeF = claim.fromMs <= fr.ref.timestampMs && fr.ref.timestampMs < claim.toMs;
    if (fr.primary) { if (inRangeF && !(fr.inClip || fr.inRaw)) failFrame('frame.missing', fr, 'anchored frame of the range is not presented'); }
    else if ((inRangeF || fr.listed) && !fr.inRaw) failFrame('frame.missing', fr, 'substituted frame\'s original bytes are not presented');
  }
  if (matchedBytes) report.add('frame.digest.match', `${matchedBytes} frame(s) hash to their anchored digests`, null, { count: matchedBytes });

  const notPlayable = new Map();
  let preroll = 0;
  for (const fr of frames.values()) {
    if (fr.primary && fr.inRaw && !fr.inClip) notPlayable.set(fr.height, (notPlayable.get(fr.height) || 0) + 1);
    if (fr.primary && fr.inClip && !(claim.fromMs <= fr.ref.timestampMs && fr.ref.timestampMs < claim.toMs)) preroll++;
  }
  for (const [h, n] of [...notPlayable].sort((a, b) => a[0] - b[0])) report.add('frame.not_playable', `${n} verified frame(s) cannot be decoded`, h, { count: n });
  if (preroll) report.add('clip.preroll', `${preroll} frame(s) outside the range make the clip decodable`, null, { count: preroll });

  const declared = [];
  for (const m of trusted.values()) for (const g of m.gaps) declared.push([g.fromSeq, g.toSeq]);
  for (const h of [...trusted.keys()].sort((a, b) => a - b)) {
    for (const g of trusted.get(h).gaps) {
      if (!(g.fromMs < claim.toMs && g.toMs >= claim.fromMs)) continue;
      report.add('gap.declared', `seq ${g.fromSeq}-${g.toSeq} declared lost`, h);
      if (g.keyframeLost) report.add('gap.keyframe_lost', `seq ${g.fromSeq}-${g.toSeq} included a keyframe`, h);
      if (g.substituteCamera) report.add('gap.substituted', `seq ${g.fromSeq}-${g.toSeq} shown from camera ${g.substituteCamera}`, h);
    }
  }
  const primaries = [...frames.values()].filter(fr => fr.primary).sort((a, b) => a.ref.seq - b.ref.seq);
  for (let i = 1; i < primaries.length; i++) {
    const a = primaries[i - 1], b = primaries[i];
    if (b.ref.seq === a.ref.seq + 1 || b.height - a.height > 1) continue;
    if (!(a.ref.timestampMs < claim.toMs && b.ref.timestampMs > claim.fromMs)) continue;
    let covered = true;
    for (let s = a.ref.seq + 1; s < b.ref.seq; s++) if (!declared.some(([lo, hi]) => lo <= s && s <= hi)) { covered = false; break; }
    if (!covered) report.add('gap.undeclared', `seq ${a.ref.seq + 1}-${b.ref.seq - 1} missing without a declared gap`, b.height);
  }
  // the same de-duplication as report.merge_findings
  const seen = new Set();
  report.findings = report.findings.filter(f => {
    const k = JSON.stringify([f.code, f.height, f.seq ?? null, f.camera ?? null, f.message]);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return report;
}

// ------------------------------------------------------------------ the shell

function parseIndex(doc) {
  if (!doc || typeof doc !== 'object' || doc.format !== BUNDLE_FORMAT) throw new BundleError(`not a ${BUNDLE_FORMAT} index`);
  if (doc.leafEncoding && JSON.stringify(doc.leafEncoding) !== JSON.stringify(LEAF_ENCODING)) throw new BundleError('unexpected leafEncoding');
  const b32 = s => { const b = unhex(s); if (b.length !== 32) throw new BundleError(`bad bytes32 ${s}`); return hex(b); };
  try {
    const claim = {
      cameraId: b32(doc.camera.id), cameraIp: doc.camera.ip ?? null, fromMs: Number(doc.range.fromMs), toMs: Number(doc.range.toMs),
      chainId: Number(doc.chainId), ledger: String(doc.contracts.VideoLedger), blocks: [], clips: [], raw: [],
    };
    if (![claim.fromMs, claim.toMs, claim.chainId].every(Number.isInteger)) throw new BundleError('bad range or chain id');
    for (const b of doc.blocks) {
      let header = null;
      if (b.header && typeof b.header === 'object') { try { header = headerFromJson(b.header); } catch { header = null; } }
      claim.blocks.push({ height: Number(b.height), header, blockHash: b.blockHash ?? null, anchorTx: b.anchorTx ?? null,
        attestTxs: (b.attestTxs || []).map(String), manifestPath: b.manifest ?? null, proofPath: b.proof ?? null });
    }
    for (const c of doc.clips || []) {
      claim.clips.push({ path: String(c.path), kind: String(c.kind || 'original'), camera: b32(c.camera), reencoded: Boolean(c.reencoded),
        frames: c.frames.map(([h, s]) => [Number(h), Number(s)]) });
    }
    for (const r of doc.rawFrames || []) claim.raw.push({ height: Number(r.height), camera: b32(r.camera), seq: Number(r.seq), path: String(r.path) });
    return claim;
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError(`malformed bundle.json: ${e.message}`);
  }
}

function failed(code, message) { const r = new Report(); r.add(code, message); return r; }

async function verifyBundle(bundlePath, rpcUrl, pinnedLedger) {
  let bundle;
  try { bundle = new Bundle(bundlePath); } catch (e) { return failed('bundle.invalid', e.message); }
  try {
    let claim;
    try { claim = parseIndex(JSON.parse(bundle.read('bundle.json').toString('utf8'))); } catch (e) { return failed('bundle.invalid', e.message); }
    const prefindings = [];
    let ledger = claim.ledger;
    if (pinnedLedger) {
      if (pinnedLedger.toLowerCase() !== claim.ledger.toLowerCase()) {
        prefindings.push(['bundle.contract.mismatch', `bundle names ${claim.ledger}, trusted ledger is ${pinnedLedger}`, null]);
      }
      ledger = pinnedLedger;
    }
    for (const b of claim.blocks) {
      b.manifest = bundle.readOrNull(b.manifestPath);
      const p = bundle.readOrNull(b.proofPath);
      try { b.proof = p === null ? null : JSON.parse(p.toString('utf8')); } catch { b.proof = { malformed: true }; }
    }
    const chain = new Chain(rpcUrl, ledger);
    let facts;
    try {
      const chainId = Number(BigInt(await chain.rpc('eth_chainId', [])));
      const code = await chain.rpc('eth_getCode', [ledger, 'latest']);
      if (!code || code === '0x') return failed('bundle.contract.mismatch', `no contract at ${ledger} on this chain`);
      let inRange = [];
      if (claim.fromMs < claim.toMs) {
        const [first, last] = await chain.call('blocksInRange(bytes32,uint64,uint64)', ['bytes32', 'uint64', 'uint64'],
          [claim.cameraId, BigInt(Math.max(0, claim.fromMs)), BigInt(Math.max(0, claim.toMs))], ['uint64', 'uint64']);
        for (let h = Number(first); h <= Number(last); h++) inRange.push(h);
      }
      const blocks = await chainBlocks(chain, claim.cameraId, [...inRange, ...claim.blocks.map(b => b.height)]);
      const proofsOnChain = new Map();
      for (const b of claim.blocks) {
        const cb = blocks.get(b.height);
        if (!cb || b.proof === null) continue;
        let parsed;
        try { parsed = parseMultiproof(b.proof); } catch { continue; }  // judged (and reported) by verifyEvidence
        if (!parsed.hashes.length) continue;
        const r = await chain.tryCall('verifyFrames(bytes32,bytes32[],bool[],bytes32[])', ['bytes32', 'bytes32[]', 'bool[]', 'bytes32[]'],
          [cb.blockHash, parsed.mp.proof, parsed.mp.proofFlags, parsed.hashes], ['bool']);
        proofsOnChain.set(b.height, r === null ? false : Boolean(r[0]));
      }
      facts = { chainId, heightsInRange: inRange, blocks, proofsOnChain };
    } catch (e) {
      return failed('chain.unavailable', `${rpcUrl}: ${e.message}`);
    }
    const clips = new Map();
    for (const c of claim.clips) {
      try { clips.set(c.path, { samples: clipSamples(bundle.read(c.path)) }); } catch (e) { clips.set(c.path, { samples: null, error: e.message }); }
    }
    const rawDigests = new Map();
    for (const r of claim.raw) { const d = bundle.readOrNull(r.path); rawDigests.set(r.path, d === null ? null : sha256(d)); }
    return verifyEvidence(claim, facts, clips, rawDigests, { pinned: Boolean(pinnedLedger), prefindings });
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
  const order = ['failure', 'gap', 'warning', 'info', 'success'];
  const rows = [...counts].map(([k, n]) => [...k.split('\t'), String(n)])
    .sort((a, b) => order.indexOf(a[0]) - order.indexOf(b[0]) || a[1].localeCompare(b[1]));
  const w = [0, 1, 2].map(i => Math.max(...[['severity', 'code', 'count'], ...rows].map(r => r[i].length)));
  const line = r => r.map((v, i) => (i === 2 ? v.padStart(w[i]) : v.padEnd(w[i]))).join('  ').trimEnd();
  lines.push(line(['severity', 'code', 'count']), w.map(n => '-'.repeat(n)).join('  '), ...rows.map(line), '');
  for (const f of report.findings.filter(x => x.severity === 'failure')) {
    lines.push(`  ${f.code}${f.height !== null ? ` (block ${f.height}${f.seq !== undefined ? `, seq ${f.seq}` : ''})` : ''}: ${f.message}`);
  }
  lines.push(`VERDICT: ${report.verdict.toUpperCase().replace(/_/g, ' ')}`);
  return lines.join('\n') + '\n';
}

async function main(argv) {
  const args = { json: false, rpc: process.env.FRAMELEDGER_RPC || null, ledger: null, bundle: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') args.json = true;
    else if (a === '--codes') { process.stdout.write(JSON.stringify(CODES, null, 1) + '\n'); return 0; }
    else if (a === '--rpc') args.rpc = argv[++i];
    else if (a === '--ledger') args.ledger = argv[++i];
    else if (a === '-h' || a === '--help') { process.stdout.write('usage: verify_bundle.js BUNDLE.zip|DIR --rpc URL [--ledger 0xADDR] [--json]\n'); return 0; }
    else if (!args.bundle) args.bundle = a;
    else { process.stderr.write(`unexpected argument ${a}\n`); return 2; }
  }
  if (!args.bundle || !args.rpc) { process.stderr.write('usage: verify_bundle.js BUNDLE.zip|DIR --rpc URL [--ledger 0xADDR] [--json]\n'); return 2; }
  const report = await verifyBundle(args.bundle, args.rpc, args.ledger);
  if (args.json) {
    const codes = [...new Set(report.findings.map(f => f.code))].sort();
    process.stdout.write(JSON.stringify({ verdict: report.verdict, producedBy: 'scripts/verify_bundle.js', codes,
      findings: report.findings }, null, 1) + '\n');
  } else process.stdout.write(render(report));
  return { verified: 0, verified_with_declared_gaps: 3, failed: 1 }[report.verdict];
}

if (require.main === module) {
  main(process.argv.slice(2)).then(code => { process.exitCode = code; }, err => {
    process.stderr.write(`verify_bundle.js: ${err.stack || err}\n`);
    process.exitCode = 1;
  });
}

module.exports = { verifyBundle, verifyEvidence, clipSamples, Bundle, CODES };
