import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureAuditAnchorStream } from "../../runtime/nats/audit-anchor-stream";
import { runCli } from "../helpers/cli";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

let database: TestDatabase;
let nats: TestNatsServer;
let env: Record<string, string>;

beforeAll(async () => {
  [database, nats] = await Promise.all([createTestDatabase(), startNatsServer()]);
  env = { DATABASE_URL: database.url, NATS_URL: nats.url };
  await database.sql`create table notes (id serial primary key, body text)`;
  // The anchor stream, as a runtime creates it at start; no sealer anchors these seals here.
  const nc = await connect({ servers: nats.url });
  await ensureAuditAnchorStream(await jetstreamManager(nc));
  await nc.close();
});

afterAll(async () => {
  await nats?.stop();
  await database?.drop();
});

/**
 * Seals one batch. A seal only covers transactions older than the oldest one still running
 * anywhere on the server, so with other test files busy it may take a few tries.
 */
async function seal(maxRows: number): Promise<void> {
  const deadline = Date.now() + 240_000;
  for (;;) {
    const [row] = await database.sql`select jetfn.seal_audit(${maxRows}) as sealed`;
    if ((row?.sealed as number) > 0) return;
    if (Date.now() > deadline) throw new Error("nothing could be sealed within 240s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function verify(): Promise<{ seq: number; problem: string; expected_rows: number; found_rows: number }[]> {
  return (await database.sql`select seq::int, problem, expected_rows, found_rows from jetfn.verify_audit()`) as never;
}

describe("the audit hash chain", { timeout: 300_000 }, () => {
  it("reports the first seal whose rows were deleted, with the counts", async () => {
    await database.sql`insert into notes (body) select 'n' || g from generate_series(1, 5) g`;
    await seal(3);
    await seal(3);
    expect(await verify()).toEqual([]);
    const cli = await runCli(["audit", "verify"], env);
    expect(cli.stdout).toBe(
      "chain intact: 2 seal(s) covering 5 row(s); 2 newest seal(s) not anchored yet; every row is sealed\n",
    );

    await database.sql`delete from jetfn.audit_log where new_row->>'body' = 'n5'`;
    expect(await verify()).toEqual([{ seq: 2, problem: "audit rows were deleted", expected_rows: 2, found_rows: 1 }]);
    const broken = await runCli(["audit", "verify", "--json"], env);
    expect(broken.code).not.toBe(0);
    expect(JSON.parse(broken.stdout)).toMatchObject({
      ok: false,
      broken: { seq: 2, problem: "audit rows were deleted" },
    });
  });

  it("notices a removed seal", async () => {
    await database.sql`delete from jetfn.audit_seals where seq = 1`;
    const [first] = await verify();
    expect(first).toMatchObject({ seq: 2, problem: expect.stringContaining("does not chain") });
  });
});

describe("pruning by month", { timeout: 300_000 }, () => {
  it("drops a sealed old month, records an anchor, and the chain still verifies", async () => {
    // A fresh chain: the previous tests broke this one on purpose.
    await database.sql`truncate jetfn.audit_seals`;
    await database.sql`delete from jetfn.audit_log`;
    await database.sql`select jetfn.ensure_audit_partitions('2020-01-01', 1)`;
    await database.sql`
      insert into jetfn.audit_log (logged_at, txid, schema_name, table_name, operation, pk, new_row)
      select timestamptz '2020-01-15', pg_current_xact_id()::text::bigint, 'public', 'notes', 'INSERT',
             jsonb_build_object('id', g), jsonb_build_object('id', g)
      from generate_series(1, 3) g`;
    await seal(100);
    await database.sql`insert into notes (body) values ('recent')`;
    await seal(100);

    const cli = await runCli(["audit", "prune", "--older-than", "30d", "--json"], env);
    expect(JSON.parse(cli.stdout)).toEqual({ dropped: ["audit_log_2020_01"] });
    const anchors = await database.sql`select seq::int, reason from jetfn.audit_anchors`;
    expect(anchors).toEqual([{ seq: 1, reason: expect.stringContaining("audit_log_2020_01") }]);
    expect(await verify()).toEqual([]);
    // The prune is recorded in NATS too: verify accepts the missing seal only up to a recorded prune.
    const after = await runCli(["audit", "verify", "--json"], env);
    expect(JSON.parse(after.stdout)).toMatchObject({ ok: true, anchors: { prunedThrough: 1 } });
    // Sealing continues from the remaining chain.
    await database.sql`insert into notes (body) values ('after prune')`;
    await seal(100);
    expect(await verify()).toEqual([]);
  });
});
