import { writeFile } from "node:fs/promises";
import path from "node:path";
import { drizzle } from "drizzle-orm/postgres-js";
import { expect, it } from "vitest";
import { enqueueInTransaction } from "../../runtime/db/outbox";
import { eventually } from "../helpers/environment";
import { useFunctionsDirEnvironment } from "../helpers/functions-dir-environment";

// A rolling deploy: the app enqueues jobs of a function that no runtime serves yet. Plain and keyed
// outbox rows alike become jobs that wait for it, and run once it is deployed; none is set aside.
const scene = useFunctionsDirEnvironment("jetfn-outbox-undeployed-");

const DEPLOYED_LATER = `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ name: z.string() }),
  async handler({ name }) {
    return { name };
  },
});
`;

it("enqueues plain, singleton and debounced rows of a function deployed a few seconds later, which runs them", {
  timeout: 90_000,
}, async () => {
  const { env, client, dir } = scene();
  await writeFile(path.join(dir, "placeholder.ts"), DEPLOYED_LATER);
  const runtime = await env.startRuntime({ functionsDir: dir, watch: true });
  const setAside: string[] = [];
  runtime.events.on("outbox:set-aside", (event) => setAside.push(event.reason));
  const db = drizzle(env.database.sql);
  const ids = await db.transaction(async (tx) => [
    (await enqueueInTransaction(tx, "deployed-later", { name: "plain" })).id,
    (await enqueueInTransaction(tx, "deployed-later", { name: "single" }, { singleton: { key: "rolling" } })).id,
    (
      await enqueueInTransaction(
        tx,
        "deployed-later",
        { name: "debounced" },
        { debounce: { key: "rolling", period: "200ms" } },
      )
    ).id,
  ]);
  // The relay has gone through the rows (each a job now, or set aside) before the function exists.
  await eventually(async () => {
    const [row] = await env.database.sql`select count(*)::int as n from jetfn.outbox`;
    return row?.n === 0;
  }, 30_000);
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  expect(setAside).toEqual([]);
  await writeFile(path.join(dir, "deployed-later.ts"), DEPLOYED_LATER);
  const views = await eventually(async () => {
    const all = await Promise.all(ids.map((id) => client.status(id)));
    return all.every((view) => view.status === "succeeded") ? all : undefined;
  }, 60_000);
  expect(views.map((view) => view.result)).toEqual([{ name: "plain" }, { name: "single" }, { name: "debounced" }]);
  expect(setAside).toEqual([]);
});
