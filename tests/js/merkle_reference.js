#!/usr/bin/env node
// Reference oracle for tests/unit/test_merkle.py: answers questions about
// @openzeppelin/merkle-tree's StandardMerkleTree so the Python port can be
// compared against the real library rather than against our reading of it.
//
// stdin:  one job object, or an array of jobs (one node start-up for many trees
//         keeps the test suite fast). A job is
//           { leafEncoding, values, sortLeaves,       // build with StandardMerkleTree.of
//             load,                                   // ...or a dump to StandardMerkleTree.load
//             proofIndices, proofValues,              // value indices; *Values pass the value itself
//             multiproofIndices, multiproofValues }   // lists of lists of value indices
// stdout: the matching result object (or array):
//           { root, proofs, proofsByValue, multiproofs, multiproofsByValue, dump }
//         or { error: { name, message } } when the library throws, so the
//         Python side can check that it rejects the same inputs.
'use strict';

const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');

function runJob(job) {
  try {
    const tree =
      job.load !== undefined
        ? StandardMerkleTree.load(job.load)
        : StandardMerkleTree.of(job.values, job.leafEncoding, { sortLeaves: job.sortLeaves ?? true });
    const valueAt = i => tree.at(i);
    return {
      root: tree.root,
      proofs: (job.proofIndices ?? []).map(i => tree.getProof(i)),
      proofsByValue: (job.proofValues ?? []).map(i => tree.getProof(valueAt(i))),
      multiproofs: (job.multiproofIndices ?? []).map(ix => tree.getMultiProof(ix)),
      multiproofsByValue: (job.multiproofValues ?? []).map(ix => tree.getMultiProof(ix.map(valueAt))),
      dump: tree.dump(),
    };
  } catch (e) {
    return { error: { name: e.name, message: e.message } };
  }
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', chunk => (input += chunk));
process.stdin.on('end', () => {
  const request = JSON.parse(input);
  const response = Array.isArray(request) ? request.map(runJob) : runJob(request);
  process.stdout.write(JSON.stringify(response));
});
