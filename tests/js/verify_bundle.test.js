// Unit tests of scripts/verify_bundle.js's pure parts (node --test tests/js/verify_bundle.test.js;
// run by tests/integration/test_js_verifier_hostile.py). Chain-backed behaviour is tested there.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const v = require('../../scripts/verify_bundle.js');

const B32 = '0x' + 'ab'.repeat(32);
const ADDR = '0x' + '12'.repeat(20);
const header = { cameraId: B32, height: 1, prevHash: B32, windowStartMs: 0, windowEndMs: 20000, frameCount: 3,
  framesRoot: B32, manifestDigest: B32, proposer: ADDR };
const index = () => ({
  format: 'frameledger.evidence-bundle/1', chainId: 31337, contracts: { VideoLedger: ADDR, Consortium: ADDR },
  camera: { id: B32, ip: null }, range: { fromMs: 0, toMs: 1000 },
  blocks: [{ height: 1, blockHash: B32, header, manifest: 'manifests/000001.json', proof: 'proofs/000001.json',
    anchorTx: B32, attestTxs: [B32], contextOnly: false }],
  clips: [{ path: 'clips/clip-000.mp4', kind: 'original', camera: B32, reencoded: false, why: 'remux', frames: [[1, 0], [1, 1]] }],
  rawFrames: [{ height: 1, camera: B32, seq: 2, path: 'frames/x' }],
});

test('member names: relative, no .., no backslash, no drive letter, no NUL', () => {
  for (const ok of ['bundle.json', 'clips/clip-000.mp4', 'frames/ab', 'a..b/c']) assert.equal(v.unsafeReason(ok), null, ok);
  for (const bad of ['', '../x', 'a/../../x', '/abs', 'a\\b', 'C:x', 'c:/x', 'a\0b', '..']) assert.ok(v.unsafeReason(bad), bad);
});

test('a well-formed index parses; duplicates are findings, the first entry stands', () => {
  const doc = index();
  doc.blocks.push({ ...doc.blocks[0] });
  doc.rawFrames.push({ ...doc.rawFrames[0] });
  doc.clips.push({ ...doc.clips[0] });
  doc.clips[0].frames.push([1, 0]);
  const { claim, duplicates } = v.parseIndex(doc);
  assert.equal(claim.blocks.length, 1);
  assert.equal(claim.raw.length, 1);
  assert.equal(claim.clips.length, 1);
  assert.equal(claim.clips[0].why, 'remux');
  assert.deepEqual(duplicates.map(d => d[0]), Array(4).fill('bundle.entry.duplicate'));
});

test('every wrong type or shape is a BundleError (bundle.invalid)', () => {
  const cases = [
    d => { d.blocks[0].header = 'x'; }, d => { d.blocks[0].header.height = '1'; }, d => { d.blocks[0].header.proposer = 7; },
    d => { d.chainId = '31337'; }, d => { d.chainId = true; }, d => { d.range.fromMs = 1.5; }, d => { d.camera = 'x'; },
    d => { d.camera.id = '0x12'; }, d => { d.contracts.VideoLedger = 'me'; }, d => { d.blocks = {}; },
    d => { d.blocks[0].attestTxs = B32; }, d => { d.blocks[0].manifest = 5; }, d => { d.clips[0].reencoded = 'no'; },
    d => { d.clips[0].frames = [[1]]; }, d => { d.clips[0].frames[0][1] = -1; }, d => { d.clips[0].why = 1; },
    d => { d.rawFrames[0].seq = null; }, d => { d.rawFrames = [5]; }, d => { d.codecSources = [{ camera: B32 }]; },
    d => { d.blocks = Array(10_001).fill(d.blocks[0]); }, d => { d.format = 'other'; }, d => { d.leafEncoding = ['bytes32']; },
  ];
  for (const [i, change] of cases.entries()) {
    const d = index();
    change(d);
    assert.throws(() => v.parseIndex(d), v.BundleError, `case ${i}`);
  }
});

test('verdict precedence: failure > untrusted > unchecked > gap > verified', () => {
  const verdict = codes => { const r = new v.Report(); for (const c of codes) r.add(c); return r.verdict; };
  assert.equal(verdict([]), 'verified');
  assert.equal(verdict(['gap.declared']), 'verified_with_declared_gaps');
  assert.equal(verdict(['gap.declared', 'clip.pictures.unchecked']), 'partially_verified');
  assert.equal(verdict(['clip.pictures.unchecked', 'bundle.contract.untrusted']), 'untrusted');
  assert.equal(verdict(['bundle.contract.untrusted', 'frame.missing']), 'failed');
  assert.ok(!('bundle.contract.unpinned' in v.CODES));
});

test('trust: flags, trust files and the default record; malformed ones are usage errors', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-trust-'));
  try {
    const w = (name, doc) => { const p = path.join(dir, name); fs.writeFileSync(p, typeof doc === 'string' ? doc : JSON.stringify(doc)); return p; };
    const rec = w('31337.json', { chainId: 31337, contracts: { VideoLedger: { address: ADDR }, Consortium: { address: ADDR } } });
    assert.deepEqual(v.trustedFor(v.loadTrust({ deploymentsDir: dir }), 31337).map(d => d.VideoLedger), [ADDR]);
    assert.deepEqual(v.trustedFor(v.loadTrust({ deploymentsDir: dir }), 1), []);
    assert.equal(v.trustedFor(v.loadTrust({ deployment: rec, deploymentsDir: dir }), 31337)[0].Consortium, ADDR);
    assert.equal(v.trustedFor(v.loadTrust({ ledger: ADDR }), 5)[0].VideoLedger, ADDR);
    const trust = w('t.json', { format: 'frameledger.trust/1', deployments: [
      { chainId: 1, VideoLedger: '0x' + '01'.repeat(20) }, { chainId: 31337, VideoLedger: ADDR }, { chainId: 31337, VideoLedger: B32.slice(0, 42) }] });
    assert.equal(v.trustedFor(v.loadTrust({ trust }), 31337).length, 2);
    // explicit flags: the default directory is not consulted
    assert.deepEqual(v.trustedFor(v.loadTrust({ trust, deploymentsDir: dir }), 7), []);
    for (const bad of [{ ledger: '0x12' }, { trust: w('a.json', '{}') }, { trust: w('b.json', 'nope') }, { trust: path.join(dir, 'absent') },
      { deployment: w('c.json', { chainId: 1, contracts: {} }) },
      { trust: w('d.json', { format: 'frameledger.trust/1', deployments: [{ chainId: 1, VideoLedger: ADDR, Consortium: 'x' }] }) }]) {
      assert.throws(() => v.loadTrust(bad), v.UsageError, JSON.stringify(bad));
    }
    w('31337.json', '{"chainId": 31337}');
    assert.throws(() => v.trustedFor(v.loadTrust({ deploymentsDir: dir }), 31337), v.UsageError);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('directory bundles: paths stay inside, symlinks out are refused, limits by role', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-dir-'));
  try {
    const dir = path.join(root, 'bundle');
    fs.mkdirSync(path.join(dir, 'frames'), { recursive: true });
    fs.writeFileSync(path.join(root, 'secret'), 'outside');
    fs.writeFileSync(path.join(dir, 'frames', 'ok'), 'inside');
    fs.symlinkSync(path.join(root, 'secret'), path.join(dir, 'frames', 'link'));
    fs.writeFileSync(path.join(dir, 'big.json'), Buffer.alloc(v.MEMBER_LIMITS.index + 1));
    const b = v.openBundle(dir);
    assert.equal((await v.readSmall(b, 'frames/ok', 'frame')).toString(), 'inside');
    assert.equal(await v.readSmall(b, 'frames/link', 'frame'), null);
    assert.equal(await v.readSmall(b, '../secret', 'frame'), null);
    assert.equal(await v.readSmall(b, 'big.json', 'index'), null);
    assert.notEqual(await v.hashMember(b, 'big.json', 'frame'), null);  // within the frame limit
    assert.equal(await v.readSmall(b, 'absent', 'frame'), null);
    assert.deepEqual(b.findings.map(f => f[0]).sort(), ['bundle.member.oversize', 'bundle.member.unsafe', 'bundle.member.unsafe']);
  } finally { fs.rmSync(root, { recursive: true, force: true }); }
});

// Batch mode. Fresh headers: earlier tests edit the shared one.
const freshHeader = () => ({ cameraId: B32, height: 1, prevHash: B32, windowStartMs: 0, windowEndMs: 20000, frameCount: 3,
  framesRoot: B32, manifestDigest: B32, proposer: ADDR });
const batchIndex = () => { const d = index(); d.blocks[0].header = freshHeader(); return d; };

test('batch mode: the index says so, names its BatchLedger and lists batch manifests; mixing modes is refused', () => {
  const doc = batchIndex();
  doc.anchoring = 'batch';
  doc.contracts.BatchLedger = ADDR;
  doc.batches = [{ index: 3, manifest: 'batches/00000003.json' }, { index: 3, manifest: 'batches/other.json' }];
  const { claim } = v.parseIndex(doc);
  assert.equal(claim.anchoring, 'batch');
  assert.equal(claim.batchLedger, ADDR);
  assert.deepEqual([...claim.batches], [[3, 'batches/00000003.json']]);
  assert.equal(v.parseIndex(batchIndex()).claim.anchoring, 'header');
  const mixed = batchIndex();
  mixed.batches = [];
  assert.throws(() => v.parseIndex(mixed), v.BundleError);
  assert.throws(() => v.parseIndex({ ...batchIndex(), anchoring: 'tree' }), v.BundleError);
  const noLedger = { ...doc, contracts: { VideoLedger: ADDR } };
  assert.throws(() => v.parseIndex(noLedger), v.BundleError);
  const tooMany = { ...doc, batches: Array.from({ length: v.LIMITS.batches + 1 }, (_, i) => ({ index: i, manifest: 'b' })) };
  assert.throws(() => v.parseIndex(tooMany), v.BundleError);
});

test('batch tree: the root and proofs are @openzeppelin/merkle-tree StandardMerkleTree over (bytes32 blockHash)', () => {
  const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
  const hashes = Array.from({ length: 7 }, (_, i) => '0x' + String(i + 1).repeat(64).slice(0, 64));
  const ref = StandardMerkleTree.of(hashes.map(h => [h]), ['bytes32']);
  const ours = v.batchTree(hashes);
  assert.equal(ours.root, ref.root);
  for (const h of hashes) assert.deepEqual(ours.proof(h), ref.getProof([h]));
});

test('batch manifest: canonical bytes only, headers in camera order', () => {
  const header = freshHeader();
  const doc = { format: 'frameledger.batch/1', windowStartMs: 0, windowEndMs: 20000, prevBatchRoot: B32, blocks: [header] };
  const bytes = Buffer.from(v.canonicalJson(doc));
  assert.equal(v.parseBatchManifest(bytes).headers.length, 1);
  assert.throws(() => v.parseBatchManifest(Buffer.from(JSON.stringify(doc, null, 1))), v.BundleError);
  const unordered = { ...doc, blocks: [{ ...header, cameraId: '0x' + 'ff'.repeat(32) }, header] };
  assert.throws(() => v.parseBatchManifest(Buffer.from(v.canonicalJson(unordered))), v.BundleError);
  assert.throws(() => v.parseBatchManifest(Buffer.from(v.canonicalJson({ ...doc, extra: 1 }))), v.BundleError);
});

test('outage declarations: an integer field written as 5.0 or 5e0 is refused, as Python refuses it', () => {
  const proof = (fromMs) => ({ domain: 'frameledger.control.v2', signature: 'ab'.repeat(64),
    signedJson: `{"afterSeq":4,"camera":"10.0.0.1","fromMs":${fromMs},"reason":"lost","toMs":9000,"ts":9001,"type":"outage"}` });
  const d = v.outageOf(proof('5000'));
  assert.equal(d.fromMs, 5000);
  assert.equal(d.afterSeq, 4);
  for (const bad of ['5000.0', '5e3', '5000E0', '-5000']) {
    assert.throws(() => v.outageOf(proof(bad)), /fromMs is not an integer/, bad);
  }
});
