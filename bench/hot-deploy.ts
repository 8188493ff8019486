import { createClient, type JetfnClient } from "../runtime/sdk/client";
import { createFunctionsFolder, startBenchRuntime, versionedFunctionSource } from "./jetfn-host";
import type { Scenario } from "./model";
import { quantile, sleep } from "./stats";

const NEW_P50 = "new file -> first answer, p50";
const NEW_MAX = "new file -> first answer, max";
const EDIT_P50 = "edit -> new version answers, p50";
const EDIT_MAX = "edit -> new version answers, max";
const TRIAL_TIMEOUT_MS = 30_000;

/** 5. Hot deploy with many functions deployed and the folder watched. */
export const hotDeployScenario: Scenario = {
  id: "hot-deploy",
  title: "5. Hot deploy",
  baselines: {},
  targets: [
    {
      scenario: "hot-deploy",
      metric: NEW_P50,
      contender: "jetfn",
      kind: "absolute",
      baselines: [],
      max: 500,
      reason: "a new function file should answer before its author can try it",
    },
    {
      scenario: "hot-deploy",
      metric: EDIT_P50,
      contender: "jetfn",
      kind: "absolute",
      baselines: [],
      max: 500,
      reason: "an edited function should answer before its author can try it",
    },
  ],
  async run(context) {
    const { services, sizes, round } = context;
    const files: Record<string, string> = {};
    const names = Array.from({ length: sizes.deployedFunctions }, (_, i) => `hd${round}-${String(i).padStart(3, "0")}`);
    for (const name of names) files[name] = versionedFunctionSource(0);
    const folder = await createFunctionsFolder(files);
    const database = await services.jetfnDatabase("jetfn_deploy");
    const nc = await services.connectNats("hot-deploy-client");
    const client = await createClient({ connection: nc });
    const runtime = await startBenchRuntime({
      natsUrl: services.natsUrl,
      databaseUrl: database.url,
      functionsDir: folder.dir,
      watch: true,
    });
    const created: number[] = [];
    const edited: number[] = [];
    try {
      for (let trial = 0; trial < sizes.deployTrials; trial++) {
        const fresh = `hd${round}-new-${trial}`;
        let started = performance.now();
        await folder.write(fresh, versionedFunctionSource(1));
        await answersWith(client, fresh, 1);
        created.push(performance.now() - started);

        const target = names[trial % names.length] as string;
        const version = 1_000 + trial;
        started = performance.now();
        await folder.write(target, versionedFunctionSource(version));
        await answersWith(client, target, version);
        edited.push(performance.now() - started);
        // Let chokidar's per-file throttle and the deployer's verify pass settle between trials.
        await sleep(100);
      }
      context.record({
        metric: NEW_P50,
        contender: "jetfn",
        unit: "ms",
        better: "lower",
        value: quantile(created, 0.5),
      });
      context.record({ metric: NEW_MAX, contender: "jetfn", unit: "ms", better: "lower", value: Math.max(...created) });
      context.record({
        metric: EDIT_P50,
        contender: "jetfn",
        unit: "ms",
        better: "lower",
        value: quantile(edited, 0.5),
      });
      context.record({ metric: EDIT_MAX, contender: "jetfn", unit: "ms", better: "lower", value: Math.max(...edited) });
      context.log(`hot deploy with ${names.length} functions: ${sizes.deployTrials} trials of each kind`);
    } finally {
      await client.close();
      await nc.close();
      await runtime.stop();
      await database.drop();
      await folder.remove();
    }
  },
};

/** Calls `name` until it answers `{ version }` (404s and older versions are retried). */
async function answersWith(client: JetfnClient, name: string, version: number): Promise<void> {
  const deadline = Date.now() + TRIAL_TIMEOUT_MS;
  for (;;) {
    try {
      const result = (await client.call(name, {}, { timeout: "2s" })) as { version?: number } | null;
      if (result?.version === version) return;
    } catch (error) {
      if ((error as { status?: number }).status !== 404) throw error;
    }
    if (Date.now() > deadline)
      throw new Error(`${name} did not answer version ${version} within ${TRIAL_TIMEOUT_MS}ms`);
    await sleep(2);
  }
}
