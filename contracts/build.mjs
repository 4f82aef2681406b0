#!/usr/bin/env node
// Compiles contracts/src with the pinned solc and writes contracts/artifacts/<Name>.json.
//
//   node contracts/build.mjs           compile and write the artifacts
//   node contracts/build.mjs --check   compile in memory; exit 1 if the artifacts on disk differ
//
// Everything that feeds the bytecode is pinned (solc and OpenZeppelin versions in
// package-lock.json, optimizer, EVM version, source names relative to this folder), so the
// same sources give byte-identical artifacts on every machine. Run `npm ci` here first.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const CONTRACTS = ["ShoalToken", "Vault", "RewardPool", "FeeOnTransferToken"];
const STALE = "contracts/artifacts are stale: run node contracts/build.mjs";

const check = process.argv.includes("--check");
const unknown = process.argv.slice(2).filter((a) => a !== "--check");
if (unknown.length) fail(`unknown argument(s): ${unknown.join(" ")}\nusage: node contracts/build.mjs [--check]`);

let solc;
try {
  solc = require("solc");
} catch {
  fail("solc is not installed: run `npm ci` in contracts/");
}
const pinned = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).devDependencies.solc;
if (!solc.version().startsWith(`${pinned}+`)) {
  fail(`solc ${solc.version()} is installed but package.json pins ${pinned}: run \`npm ci\` in contracts/`);
}

const input = {
  language: "Solidity",
  sources: Object.fromEntries(
    CONTRACTS.map((name) => [`src/${name}.sol`, { content: readFileSync(join(here, "src", `${name}.sol`), "utf8") }]),
  ),
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

// Library imports ("@openzeppelin/contracts/...") come from this folder's node_modules.
function findImports(path) {
  const file = join(here, "node_modules", path);
  if (!path.startsWith("@") || path.includes("..") || !existsSync(file)) return { error: `not found: ${path}` };
  return { contents: readFileSync(file, "utf8") };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const diagnostics = output.errors ?? [];
for (const d of diagnostics) console.error(d.formattedMessage ?? d.message);
if (diagnostics.some((d) => d.severity === "error")) fail("compilation failed");

const artifactsDir = join(here, "artifacts");
const stale = [];
for (const name of CONTRACTS) {
  const c = output.contracts[`src/${name}.sol`]?.[name];
  if (!c) fail(`no output for ${name}`);
  const artifact = {
    contractName: name,
    abi: c.abi,
    bytecode: `0x${c.evm.bytecode.object}`,
    deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
  };
  const text = `${JSON.stringify(artifact, null, 2)}\n`;
  const file = join(artifactsDir, `${name}.json`);
  if (check) {
    if (!existsSync(file)) stale.push(`${name}.json is missing`);
    else if (readFileSync(file, "utf8") !== text) stale.push(`${name}.json differs`);
  } else {
    mkdirSync(artifactsDir, { recursive: true });
    writeFileSync(file, text);
    console.log(`wrote contracts/artifacts/${name}.json`);
  }
}

if (stale.length) fail(`${STALE} (${stale.join(", ")})`);
if (check) console.log("contracts/artifacts are up to date");

function fail(message) {
  console.error(message);
  process.exit(1);
}
