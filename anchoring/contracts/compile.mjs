// Compile Anchor.sol with solc-js and print (or write) the artifact JSON deterministically.
// Usage: node compile.mjs [out.json]   (run with NODE_PATH or from a directory whose node_modules has solc)
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(process.env.TIYI_TOOLS || join(here, "../../tools"), "package.json"));
const solc = require("solc");

const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "london", // FISCO BCOS and ganache --chain.hardfork berlin/london accept it; no PUSH0
  metadata: { bytecodeHash: "none" }, // byte-identical recompiles
  outputSelection: { "*": { Anchor: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const input = {
  language: "Solidity",
  sources: { "Anchor.sol": { content: readFileSync(join(here, "Anchor.sol"), "utf8") } },
  settings,
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const c = out.contracts["Anchor.sol"].Anchor;
const artifact = {
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
  deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  compiler: "solc-js " + solc.version(),
  evmVersion: settings.evmVersion,
  optimizer: settings.optimizer,
};
const text = JSON.stringify(artifact, null, 2) + "\n";
if (process.argv[2]) writeFileSync(process.argv[2], text);
else process.stdout.write(text);
