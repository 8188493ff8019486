import { defineConfig } from "vitest/config";

// `npm run test:faults`: the fault, load and hostile-user scenarios at full size (JETFN_FAULTS_FULL=1),
// one file at a time so their timings do not disturb each other. `npm test` runs the same files in
// bounded form.
export default defineConfig({
  resolve: {
    alias: { jetfn: new URL("./runtime/index.ts", import.meta.url).pathname },
  },
  test: {
    include: ["test/faults/**/*.test.ts", "test/hostile/**/*.test.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    testTimeout: 900_000,
    hookTimeout: 120_000,
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
  },
});
