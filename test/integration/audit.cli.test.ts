import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listAuditEntries, rowHistory } from "../../runtime/audit/audit-queries";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../functions");

let env: TestEnvironment;
let client: JetfnClient;
let database: DatabaseClient;
let mailJob: string;
let cliEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.startRuntime({ functionsDir: EXAMPLES });
  client = await env.client();
  database = connectDatabase({ url: env.database.url, poolSize: 2 });
  cliEnv = { DATABASE_URL: env.database.url };
  mailJob = (await client.enqueue("send-mail", { to: ["ada@example.com", "bob@example.com"], subject: "Hello" })).id;
  await client.result(mailJob);
  await client.enqueueAndWait("factorial", { n: 5 });
  await client.enqueueAndWait("factorial", { n: 5 });
  await env.database.sql`update sent_mail set subject = 'Edited by hand' where recipient = 'bob@example.com'`;
});

afterAll(async () => {
  await database?.close();
  await env?.close();
});

describe("jetfn audit", () => {
  it("shows the example mail sender's rows under send-mail", async () => {
    const entries = await listAuditEntries(database.db, { function: "send-mail" });
    expect(entries.map((entry) => [entry.operation, entry.table, entry.newRow?.recipient])).toEqual([
      ["INSERT", "sent_mail", "bob@example.com"],
      ["INSERT", "sent_mail", "ada@example.com"],
    ]);
    expect(entries.every((entry) => entry.invocationId === mailJob && entry.attempt === 1)).toBe(true);
  });

  it("lists changes newest first, one readable line each, with a compact diff", async () => {
    const result = await runCli(["audit", "--limit", "3"], cliEnv);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/outside \(postgres\)\s+UPDATE sent_mail #2\s+subject: "Hello" -> "Edited by hand"$/);
    expect(lines[1]).toMatch(/factorial [0-9a-f-]{36}\s+UPDATE factorials #5\s+computed_at: /);
  });

  it("filters by function, table and time, and prints JSON lines", async () => {
    const result = await runCli(
      ["audit", "--function", "factorial", "--table", "factorials", "--since", "1h", "--json"],
      cliEnv,
    );
    const entries = result.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(entries.map((entry) => entry.operation)).toEqual(["UPDATE", "INSERT"]);
    expect(entries[1]).toMatchObject({
      function: "factorial",
      table: "factorials",
      pk: { n: 5 },
      newRow: { n: 5, value: "120" },
    });
    const none = await runCli(["audit", "--function", "factorial", "--until", "2000-01-01", "--json"], cliEnv);
    expect(none.stdout).toBe("");
    const outside = await runCli(["audit", "--outside", "--json"], cliEnv);
    expect(
      outside.stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line).function),
    ).toEqual([null]);
  });

  it("groups one invocation's changes by table", async () => {
    const result = await runCli(["audit", mailJob], cliEnv);
    expect(result.stdout.split("\n")[0]).toBe("public.sent_mail: 2 change(s)");
    expect(result.stdout).toContain('recipient="ada@example.com"');
  });

  it("reads a row's history as a timeline", async () => {
    const history = await rowHistory(database.db, "sent_mail", 2);
    expect(history.map((entry) => [entry.operation, entry.function])).toEqual([
      ["INSERT", "send-mail"],
      ["UPDATE", null],
    ]);
    const result = await runCli(["audit", "--table", "sent_mail", "--row", "2"], cliEnv);
    const lines = result.stdout.trim().split("\n");
    expect(lines[0]).toContain("send-mail");
    expect(lines[1]).toContain('subject: "Hello" -> "Edited by hand"');
  });

  it("--check reports every table covered, and names one that is not", async () => {
    const covered = await runCli(["audit", "--check"], cliEnv);
    expect(covered).toMatchObject({
      code: 0,
      stdout: "every table of public is audited\nno writes by jetfn_runtime outside an invocation\n",
    });
    await env.database.sql`alter event trigger jetfn_audit_new_tables disable`;
    await env.database.sql`create table forgotten (id int primary key)`;
    await env.database.sql`alter event trigger jetfn_audit_new_tables enable`;
    const missing = await runCli(["audit", "--check", "--json"], cliEnv);
    expect(missing.code).not.toBe(0);
    expect(JSON.parse(missing.stdout)).toEqual({
      schemas: ["public"],
      uncovered: [{ schema: "public", table: "forgotten" }],
      runtimeWritesOutsideInvocations: { role: "jetfn_runtime", rows: 0, tables: [], first: null, last: null },
    });
  });

  it("refuses bad filters with a one-line reason", async () => {
    const result = await runCli(["audit", "--row", "2"], cliEnv);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toBe("jetfn: E_INPUT_INVALID: --row needs --table (the table the row belongs to)\n");
  });
});
