#!/usr/bin/env node
// Compile contracts/*.sol with solc-js (native solc cannot be downloaded here) and write one
// artifact per contract to contracts/artifacts/<Name>.json: ABI, bytecode, deployed bytecode and
// the exact compiler settings. The artifacts are committed so that Python never needs a compiler.
//
//   node scripts/compile.js           write the artifacts
//   node scripts/compile.js --check   compile in memory; exit 1 and name every stale artifact
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = path.resolve(__dirname, '..');
const CONTRACTS = path.join(ROOT, 'contracts');
const ARTIFACTS = path.join(CONTRACTS, 'artifacts');
const NODE_MODULES = path.join(ROOT, 'node_modules');

// Cancun: OpenZeppelin 5.7 sources contain MCOPY (utils/Arrays.sol, pulled in by EnumerableSet),
// so older targets do not compile, and solc >= 0.8.25 emits MCOPY for memory copies on Cancun.
// Besu runs Cancun on QBFT networks from 24.3 (time-based forks; 24.7+ recommended) when the
// genesis sets shanghaiTime/cancunTime (chain/besu/genesis.json sets both to 0). Prague is left out
// on purpose: it adds nothing we use and needs a newer Besu. See docs/CONTRACTS.md.
const SETTINGS = {
  evmVersion: 'cancun',
  optimizer: { enabled: true, runs: 200 },
  remappings: ['@openzeppelin/=node_modules/@openzeppelin/'],
  outputSelection: {
    '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'devdoc', 'userdoc'] },
  },
};

function sources() {
  const out = {};
  for (const name of fs.readdirSync(CONTRACTS).sort()) {
    if (name.endsWith('.sol')) {
      out[`contracts/${name}`] = { content: fs.readFileSync(path.join(CONTRACTS, name), 'utf8') };
    }
  }
  return out;
}

function findImports(importPath) {
  // Remapped OpenZeppelin imports arrive as node_modules/@openzeppelin/...; relative imports of
  // our own sources arrive as contracts/....
  for (const base of [ROOT, NODE_MODULES]) {
    const candidate = path.join(base, importPath);
    if (candidate.startsWith(ROOT) && fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    }
  }
  return { error: `not found: ${importPath}` };
}

function compile() {
  const input = { language: 'Solidity', sources: sources(), settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) {
    process.stderr.write(`${e.severity}: ${e.formattedMessage}\n`);
  }
  if (errors.length) process.exit(2);

  const artifacts = {};
  for (const [file, contracts] of Object.entries(output.contracts)) {
    if (!file.startsWith('contracts/')) continue; // libraries are inlined or linked by their users
    for (const [name, c] of Object.entries(contracts)) {
      artifacts[name] = {
        contractName: name,
        sourceName: file,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        devdoc: c.devdoc,
        userdoc: c.userdoc,
        compiler: { name: 'solc-js', version: solc.version(), settings: SETTINGS },
      };
    }
  }
  return artifacts;
}

function serialise(artifact) {
  return JSON.stringify(artifact, null, 2) + '\n';
}

function main() {
  const check = process.argv.includes('--check');
  const artifacts = compile();
  const stale = [];
  if (!check) fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const [name, artifact] of Object.entries(artifacts)) {
    const file = path.join(ARTIFACTS, `${name}.json`);
    const text = serialise(artifact);
    const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
    if (current === text) continue;
    if (check) stale.push(name);
    else fs.writeFileSync(file, text);
  }
  const expected = new Set(Object.keys(artifacts).map((n) => `${n}.json`));
  const extra = fs.existsSync(ARTIFACTS)
    ? fs.readdirSync(ARTIFACTS).filter((f) => f.endsWith('.json') && !expected.has(f))
    : [];
  if (check) {
    if (stale.length || extra.length) {
      process.stderr.write(`stale artifacts: ${stale.join(', ') || '-'}; orphaned: ${extra.join(', ') || '-'}\n`);
      process.stderr.write('run `make artifacts` (node scripts/compile.js) and commit contracts/artifacts/\n');
      process.exit(1);
    }
    process.stdout.write(`artifacts up to date (${Object.keys(artifacts).length} contracts, ${solc.version()})\n`);
  } else {
    for (const f of extra) fs.unlinkSync(path.join(ARTIFACTS, f));
    process.stdout.write(`wrote ${Object.keys(artifacts).length} artifacts with ${solc.version()}\n`);
  }
}

main();
