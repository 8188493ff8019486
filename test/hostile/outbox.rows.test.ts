import { copyFile, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";
import { afterAll, beforeAll, expect, it, onTestFinished } from "vitest";
import { DEFAULT_MIGRATIONS_DIR, migrate } from "../../runtime/db/migrate";
import { runCli } from "../helpers/cli";
import { createTestDatabase } from "../helpers/database";
import { urlAs } from "../helpers/database-url";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { OUTBOX_RULE_CASES } from "../helpers/outbox-rule-cases";

// An outbox row is published with the runtime's NATS rights, so whoever may insert into
// jetfn.outbox (apps, handler code) must not choose its subject or headers: a row for
// $JS.API.STREAM.PURGE.JETFN_JOBS purged the jobs stream, every second, since the refused row
// stayed. The database refuses such rows; a row that gets in anyway is set aside once, visibly.
let env: TestEnvironment;

const PURGE = "$JS.API.STREAM.PURGE.JETFN_JOBS";
const CONSTRAINT = "outbox_row_is_a_jetfn_message";
const ROLES_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../schema/roles.sql");

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

async function storedJobs(): Promise<number> {
  const nc = await connect({ servers: env.nats.url });
  try {
    const manager = await jetstreamManager(nc);
    return (await manager.streams.info("JETFN_JOBS")).state.messages;
  } finally {
    await nc.close();
  }
}

/** Five stored jobs for a function no runtime serves: they wait in the stream. */
async function storeFiveJobs(): Promise<void> {
  const client = await env.client();
  for (let index = 0; index < 5; index++) await client.enqueue("nobody-serves-this", { index });
}

it("refuses, at insert, a row that would purge the jobs stream, even from a superuser", async () => {
  const runtime = await env.startRuntime();
  await storeFiveJobs();
  const before = await storedJobs();
  expect(before).toBeGreaterThanOrEqual(5);
  await expect(
    env.database.sql`insert into jetfn.outbox (id, subject, body) values ('evil-1', ${PURGE}, '')`,
  ).rejects.toThrow(CONSTRAINT);
  await expect(
    env.database.sql`insert into jetfn.outbox (id, subject, headers, body)
                     values ('echo:rollup-1', 'fn.job.echo', '{"Jetfn-Id": "rollup-1", "Nats-Rollup": "all"}', '{}')`,
  ).rejects.toThrow(CONSTRAINT);
  // Give a relay that did take it the time to publish it.
  await new Promise((resolve) => setTimeout(resolve, 2_500));
  expect(await storedJobs()).toBe(before);
  expect(runtime.logs.matching("set aside")).toEqual([]);
});

it("sets aside, once, rows that bypassed the constraint or are too large to publish", { timeout: 90_000 }, async () => {
  const runtime = await env.startRuntime();
  const before = await storedJobs();
  const setAside: string[] = [];
  runtime.events.on("outbox:set-aside", (event) => setAside.push(event.id));
  // A superuser (or the owner) can drop the constraint; the relay still checks every row.
  await env.database.sql.begin(async (tx) => {
    await tx.unsafe(`alter table jetfn.outbox drop constraint if exists ${CONSTRAINT}`);
    await tx`insert into jetfn.outbox (id, subject, body) values ('evil-purge', ${PURGE}, '')`;
    await tx`insert into jetfn.outbox (id, subject, headers, body)
             values ('echo:evil-rollup', 'fn.job.echo', '{"Jetfn-Id": "evil-rollup", "Nats-Rollup": "all"}', '{}')`;
  });
  // Within the database's limit, over the NATS server's max_payload (1 MiB by default).
  const large = JSON.stringify({ text: "x".repeat(1_200_000) });
  await env.database.sql`insert into jetfn.outbox (id, subject, headers, body)
                         values ('echo:too-large-1', 'fn.job.echo', '{"Jetfn-Id": "too-large-1"}', ${large})`;

  await eventually(() => setAside.length >= 3, 30_000);
  await env.database.sql.unsafe(
    `alter table jetfn.outbox add constraint ${CONSTRAINT} check (jetfn.outbox_row_problem(id, subject, headers, body) is null)`,
  );
  // Several sweeps later: nothing retried, one warning per row, the stream untouched.
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  expect(setAside.sort()).toEqual(["echo:evil-rollup", "echo:too-large-1", "evil-purge"]);
  expect(runtime.logs.matching("Outbox row set aside").map((line) => line.messageId)).toHaveLength(3);
  expect(await storedJobs()).toBe(before);
  expect(await env.database.sql`select id from jetfn.outbox`).toEqual([]);
  const kept = await env.database.sql`select id, reason from jetfn.outbox_set_aside order by id`;
  expect(kept.map((row) => row.id)).toEqual(["echo:evil-rollup", "echo:too-large-1", "evil-purge"]);
  expect(kept[0]?.reason).toMatch(/Jetfn-Id, equal to its invocation id/);
  expect(kept[1]?.reason).toMatch(/max_payload|accepts at most/);
  expect(kept[2]?.reason).toMatch(/subject must be fn\.job/);

  // The operator sees them, cannot release them while they break the rules, and drops them.
  const cliEnv = { DATABASE_URL: env.database.url };
  const listed = await runCli(["outbox", "--json"], cliEnv);
  expect(listed.code).toBe(0);
  const ids = listed.stdout
    .trim()
    .split("\n")
    .map((line) => (JSON.parse(line) as { id: string }).id);
  expect(ids.sort()).toEqual(["echo:evil-rollup", "echo:too-large-1", "evil-purge"]);
  const release = await runCli(["outbox", "release", "evil-purge"], cliEnv);
  expect(release.code).not.toBe(0);
  expect(release.stdout + release.stderr).toContain("E_OUTBOX_ROW_INVALID");
  expect(await env.database.sql`select id from jetfn.outbox`).toEqual([]);
  const dropped = await runCli(["outbox", "drop", "--all", "--json"], cliEnv);
  expect(dropped.code).toBe(0);
  expect((JSON.parse(dropped.stdout) as { dropped: string[] }).dropped.sort()).toEqual(ids.sort());
  expect(await env.database.sql`select id from jetfn.outbox_set_aside`).toEqual([]);
  expect(await storedJobs()).toBe(before);
});

it("the database and the relay apply the same rules", async () => {
  const verdicts = [];
  for (const { name, row } of OUTBOX_RULE_CASES) {
    const [result] = await env.database.sql`
      select jetfn.outbox_row_problem(${row.id}, ${row.subject}, ${env.database.sql.json(row.headers)}, ${row.body}) as problem`;
    verdicts.push({ name, accepted: result?.problem === null });
  }
  expect(verdicts).toEqual(OUTBOX_RULE_CASES.map(({ name, accepted }) => ({ name, accepted })));
});

it("with the production roles: the runtime role is refused the row, sets rows aside, and cannot read or erase them", {
  timeout: 90_000,
}, async () => {
  const database = await createTestDatabase();
  await database.sql.unsafe(await readFile(ROLES_SQL, "utf8"));
  const runtimeUrl = urlAs(database.url, "jetfn_runtime");
  const asRuntime = postgres(runtimeUrl, { max: 1, onnotice: () => {} });
  onTestFinished(() => asRuntime.end({ timeout: 2 }));
  await expect(asRuntime`insert into jetfn.outbox (id, subject, body) values ('evil-2', ${PURGE}, '')`).rejects.toThrow(
    CONSTRAINT,
  );

  const runtime = await env.startRuntime({ databaseUrl: runtimeUrl });
  const setAside: string[] = [];
  runtime.events.on("outbox:set-aside", (event) => setAside.push(event.id));
  const large = JSON.stringify({ text: "x".repeat(1_200_000) });
  await asRuntime`insert into jetfn.outbox (id, subject, headers, body)
                  values ('echo:too-large-2', 'fn.job.echo', '{"Jetfn-Id": "too-large-2"}', ${large})`;
  await eventually(() => setAside.length > 0, 30_000);
  expect(setAside).toEqual(["echo:too-large-2"]);
  expect(await database.sql`select id from jetfn.outbox_set_aside`).toEqual([{ id: "echo:too-large-2" }]);
  await expect(asRuntime`select id from jetfn.outbox_set_aside`).rejects.toThrow(/permission denied/);
  await expect(asRuntime`delete from jetfn.outbox_set_aside`).rejects.toThrow(/permission denied/);
});

it("an upgrade sets aside the rows already waiting that break the rules, and keeps the rest", async () => {
  const database = await createTestDatabase({ empty: true });
  const before = await mkdtemp(path.join(tmpdir(), "jetfn-migrations-"));
  onTestFinished(() => rm(before, { recursive: true, force: true }));
  for (const file of await readdir(DEFAULT_MIGRATIONS_DIR)) {
    if (file < "0018") await copyFile(path.join(DEFAULT_MIGRATIONS_DIR, file), path.join(before, file));
  }
  await migrate(database.sql, { directory: before });
  await database.sql`insert into jetfn.outbox (id, subject, headers, body) values
    ('evil-old', ${PURGE}, '{}', ''),
    ('echo:good-old-1', 'fn.job.echo', '{"Jetfn-Id": "good-old-1"}', '{}')`;
  await migrate(database.sql);
  expect(await database.sql`select id from jetfn.outbox`).toEqual([{ id: "echo:good-old-1" }]);
  const kept = await database.sql`select id, reason from jetfn.outbox_set_aside`;
  expect(kept).toEqual([{ id: "evil-old", reason: expect.stringMatching(/subject must be fn\.job/) }]);
});
