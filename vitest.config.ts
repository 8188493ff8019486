import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    alias: {
      "jetfn/client": new URL("./runtime/client-api.ts", import.meta.url).pathname,
      "jetfn/testing": new URL("./runtime/testing/index.ts", import.meta.url).pathname,
      jetfn: new URL("./runtime/index.ts", import.meta.url).pathname,
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    // Generous for a loaded machine: beside two CPU burners (and more) a test that starts the CLI a
    // few times, each a Node process compiling TypeScript, took over 30 s. A test that hangs still fails.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // The redeploy memory test measures the heap after forcing garbage collection.
    execArgv: ["--expose-gc"],
    // Each integration file starts its own nats-server and database; two cores, so stay modest.
    maxWorkers: 3,
    typecheck: { enabled: true, include: ["test/**/*.test-d.ts"] },
  },
});
