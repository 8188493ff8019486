import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

const ROLES_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../schema/roles.sql");

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  await env.database.sql.unsafe(await readFile(ROLES_SQL, "utf8"));
});

afterAll(async () => {
  await env?.close();
});

it("seals and anchors a running runtime's audit rows, as the runtime role", { timeout: 300_000 }, async () => {
  const url = new URL(env.database.url);
  url.username = "jetfn_runtime";
  await env.startRuntime({ databaseUrl: url.toString() });
  const client = await env.client();
  const job = await client.enqueue("insert-item", { name: "anchored" });
  await client.result(job.id);
  const cliEnv = { DATABASE_URL: env.database.url, NATS_URL: env.nats.url };
  // The runtime seals once a second, once the rows' transactions are older than every running one.
  const verified = await eventually(async () => {
    const cli = await runCli(["audit", "verify", "--json"], cliEnv);
    const result = JSON.parse(cli.stdout) as { ok: boolean; unsealedRows: number; anchors: { unanchored: number } };
    return result.unsealedRows === 0 && result.anchors.unanchored === 0 ? { cli, result } : undefined;
  }, 240_000);
  expect(verified.result).toMatchObject({ ok: true, anchors: { anchored: expect.any(Number) } });
  expect(verified.cli.code).toBe(0);
  const text = await runCli(["audit", "verify"], cliEnv);
  expect(text.stdout).toMatch(
    /^chain intact: \d+ seal\(s\) covering \d+ row\(s\), anchored through seal #\d+; every row is sealed\n$/,
  );
});
