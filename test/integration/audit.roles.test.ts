import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres, { type Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";

const ROLES_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../schema/roles.sql");

let env: TestEnvironment;
let runtimeSql: Sql;

function as(role: string): string {
  const url = new URL(env.database.url);
  url.username = role;
  return url.toString();
}

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  await env.database.sql.unsafe(await readFile(ROLES_SQL, "utf8"));
  runtimeSql = postgres(as("jetfn_runtime"), { max: 2, onnotice: () => {} });
});

afterAll(async () => {
  await runtimeSql?.end();
  await env?.close();
});

async function refusal(statement: string): Promise<string> {
  try {
    await runtimeSql.unsafe(statement);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error(`the runtime role was allowed to run: ${statement}`);
}

describe("database roles", () => {
  it("lets the runtime role write app rows, which are audited", async () => {
    await runtimeSql`insert into items (name) values ('by-runtime-role')`;
    const [row] = await env.database
      .sql`select db_user, operation from jetfn.audit_log where new_row->>'name' = 'by-runtime-role'`;
    expect(row).toEqual({ db_user: "jetfn_runtime", operation: "INSERT" });
  });

  it("refuses the runtime role UPDATE, DELETE and TRUNCATE on the audit log", async () => {
    expect(await refusal("update jetfn.audit_log set function = 'forged'")).toMatch(/permission denied/);
    expect(await refusal("delete from jetfn.audit_log")).toMatch(/permission denied/);
    expect(await refusal("truncate jetfn.audit_log")).toMatch(/permission denied/);
    expect(await refusal("insert into jetfn.audit_seals (seq) values (99)")).toMatch(/permission denied/);
  });

  it("refuses the runtime role disabling or dropping the capture", async () => {
    expect(await refusal("alter table items disable trigger jetfn_audit_insert")).toMatch(/must be owner/);
    expect(await refusal("drop trigger jetfn_audit_insert on items")).toMatch(/must be owner/);
    expect(await refusal("drop function jetfn.capture_changes()")).toMatch(/must be owner/);
    expect(await refusal("select jetfn.prune_audit('1 day')")).toMatch(/permission denied/);
  });

  it("runs a whole runtime as the runtime role: jobs commit, audit rows carry the function", async () => {
    await env.startRuntime({ databaseUrl: as("jetfn_runtime") });
    const client = await env.client();
    const job = await client.enqueue("insert-item", { name: "runtime-role-job" });
    await client.result(job.id);
    const [row] = await env.database.sql`
      select function, invocation_id, db_user from jetfn.audit_log where new_row->>'name' = 'runtime-role-job'`;
    expect(row).toEqual({ function: "insert-item", invocation_id: job.id, db_user: "jetfn_runtime" });
    // The outbox works under the runtime role too: the child job is published and runs.
    const parent = await client.enqueue("enqueue-next", { name: "runtime-role-parent" });
    const child = ((await client.result(parent.id)) as { child: string }).child;
    await client.result(child);
    const children = await env.database
      .sql`select count(*)::int as n from items where name = 'runtime-role-parent-child'`;
    expect(children[0]?.n).toBe(1);
  });
});
