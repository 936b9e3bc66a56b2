#!/usr/bin/env node
// Compiles contracts/src and contracts/test with the pinned solc-js (package.json) and writes one
// artifact per contract (ABI + bytecode) into --out (default: taonode/chain/artifacts).
// Deterministic: the same sources give byte-identical artifacts (the drift test relies on it).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = __dirname;
const args = process.argv.slice(2);
let out = path.join(root, "..", "taonode", "chain", "artifacts");
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--out") out = path.resolve(args[++i]);
  else {
    console.error(`unknown argument ${args[i]}`);
    process.exit(2);
  }
}

const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  viaIR: true,
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const sources = {};
for (const dir of ["src", "test"]) {
  const abs = path.join(root, dir);
  for (const f of fs.readdirSync(abs).sort()) {
    if (f.endsWith(".sol")) sources[`${dir}/${f}`] = { content: fs.readFileSync(path.join(abs, f), "utf8") };
  }
}

function findImports(p) {
  const abs = path.join(root, p);
  if (fs.existsSync(abs)) return { contents: fs.readFileSync(abs, "utf8") };
  return { error: `not found: ${p}` };
}

const input = { language: "Solidity", sources, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
let failed = false;
for (const e of output.errors || []) {
  console.error(e.formattedMessage);
  if (e.severity === "error") failed = true;
}
if (failed) process.exit(1);

fs.mkdirSync(out, { recursive: true });
const written = [];
for (const source of Object.keys(output.contracts).sort()) {
  for (const name of Object.keys(output.contracts[source]).sort()) {
    const c = output.contracts[source][name];
    if (!c.evm.bytecode.object) continue; // interfaces / abstract
    const artifact = {
      contractName: name,
      sourceName: source,
      compiler: { name: "solc-js", version: solc.version(), settings: SETTINGS },
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
    const file = path.join(out, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(artifact, null, 1) + "\n");
    written.push(`${name}: ${c.evm.deployedBytecode.object.length / 2} bytes`);
  }
}
console.log(written.join("\n"));
