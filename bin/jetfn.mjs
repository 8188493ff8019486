#!/usr/bin/env node
// Entry point of `npx jetfn`: the runtime is TypeScript, loaded through tsx.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  process.stderr.write(
    `jetfn: Node.js 20.19 or newer is required (this is ${process.versions.node}); install a current Node.js\n`,
  );
  process.exit(1);
}

const { register } = await import("tsx/esm/api");
process.setSourceMapsEnabled(true);
register();
await import("../runtime/cli/main.ts");
