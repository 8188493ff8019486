#!/usr/bin/env node
// Entry point of `npx jetfn`: the runtime is TypeScript, loaded through tsx.
import { register } from "tsx/esm/api";

process.setSourceMapsEnabled(true);
register();
await import("../runtime/cli/main.ts");
