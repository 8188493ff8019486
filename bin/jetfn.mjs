#!/usr/bin/env -S node --max-semi-space-size=64
// Entry point of `npx jetfn`.
// --max-semi-space-size=64: a finished job's state lives until its batched record commits (tens of
// milliseconds); in Node's default young generation it outlived two scavenges and was promoted, and
// that copying was a fifth of a no-op job's CPU (measured with the no-op jobs scenario of BENCHMARKS.md).
// The versions package.json's engines names, the ones CI tests; odd majors are never long-term releases.
const [major, minor] = process.versions.node.split(".").map(Number);
const supported = (major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 24;
if (!supported) {
  process.stderr.write(
    `jetfn: Node.js 20.19+, 22.12+ or 24+ is required (this is ${process.versions.node}); install a current Node.js\n`,
  );
  process.exit(1);
}

// Installed, jetfn runs the JavaScript built into dist/ when it was packed; in its own repository
// (the TypeScript sources are there) it runs them through tsx, so edits take effect without a build.
const { existsSync } = await import("node:fs");
process.setSourceMapsEnabled(true);
if (existsSync(new URL("../runtime/cli/main.ts", import.meta.url))) {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../runtime/cli/main.ts");
} else {
  await import("../dist/cli.js");
}
