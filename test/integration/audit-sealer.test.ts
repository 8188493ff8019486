import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { createAuditAnchorer } from "../../runtime/audit/audit-anchorer";
import { type AuditSealer, startAuditSealer } from "../../runtime/audit/audit-sealer";
import { setUpAuditChain } from "../helpers/audit-chain";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

let database: TestDatabase;
let sealer: AuditSealer | undefined;

beforeAll(async () => {
  database = await createTestDatabase();
  await database.sql`create table items (id int primary key, v text)`;
});

afterAll(async () => {
  await sealer?.close();
  await database?.drop();
});

describe("the background sealer", { timeout: 300_000 }, () => {
  it("catches up on a backlog in growing batches, and the chain verifies", async () => {
    await database.sql`insert into items select g, 'v' || g from generate_series(1, 2500) g`;
    sealer = startAuditSealer(database.sql, pino({ level: "silent" }), {
      intervalMs: 60_000,
      batchRows: 100,
      maxBatchRows: 1_000,
    });
    // Rows settle once every transaction older than theirs has ended, anywhere on the server
    // (other test files run meanwhile); until then a round seals nothing.
    const deadline = Date.now() + 240_000;
    let sealed = await sealer.sealNow();
    while (sealed === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      sealed = await sealer.sealNow();
    }
    expect(sealed).toBe(2_500);
    const seals = await database.sql`select row_count::int as rows from jetfn.audit_seals order by seq`;
    expect(seals.map((seal) => seal.rows)).toEqual([100, 400, 1_000, 1_000]);
    const broken = await database.sql`select * from jetfn.verify_audit()`;
    expect(broken).toEqual([]);
    const [lag] = await database.sql`select unsealed_rows::int as rows from jetfn.audit_seal_lag()`;
    expect(lag?.rows).toBe(0);
  });

  it("ends a seal at its byte budget, however big the rows, so a batch never outgrows one value", async () => {
    await database.sql`create table blobs (id int primary key, body text)`;
    await database.sql`
      insert into blobs select g, (select string_agg(md5(g::text || r::text), '') from generate_series(1, 5000) r)
      from generate_series(1, 4) g`;
    const before = await database.sql`select coalesce(max(seq), 0)::int as seq from jetfn.audit_seals`;
    // A budget of one byte: each seal takes the one row that crosses it.
    const deadline = Date.now() + 240_000;
    let sealedRows = 0;
    while (sealedRows < 4 && Date.now() < deadline) {
      const [row] = await database.sql`select jetfn.seal_audit(100, 1) as sealed`;
      sealedRows += row?.sealed as number;
      if (row?.sealed === 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const seals = await database.sql`
      select row_count::int as rows from jetfn.audit_seals where seq > ${before[0]?.seq as number} order by seq`;
    expect(seals.map((seal) => seal.rows)).toEqual([1, 1, 1, 1]);
    expect(await database.sql`select * from jetfn.verify_audit()`).toEqual([]);
  });
});

describe("anchoring seals in NATS", () => {
  it("anchors each seal, and picks up seals committed without their anchor", { timeout: 300_000 }, async () => {
    const chain = await setUpAuditChain(5);
    onTestFinished(() => chain.close());
    await chain.insertNotes(10);
    await chain.sealAll();
    expect((await chain.verify()).result).toMatchObject({ ok: true, seals: 2, anchors: { anchored: 2 } });

    // Seals committed by a runtime that stopped (or lost NATS) before publishing their anchors.
    await chain.insertNotes(10, "later");
    const deadline = Date.now() + 120_000;
    while ((await chain.database.sql`select jetfn.seal_audit(5) as sealed`)[0]?.sealed === 0) {
      if (Date.now() > deadline) throw new Error("nothing could be sealed within 120s");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await chain.verify()).result.anchors).toMatchObject({ anchored: 2, unanchored: 1 });

    // The next round of a freshly started anchorer (as at a runtime's start) anchors them in order.
    const manager = await jetstreamManager(chain.nc);
    const anchorer = createAuditAnchorer({
      sql: chain.database.sql,
      js: jetstream(chain.nc),
      manager,
      logger: pino({ level: "silent" }),
    });
    expect(await anchorer.anchorPending()).toBe(1);
    await chain.sealAll();
    const after = await chain.verify();
    expect(after.result).toMatchObject({ ok: true, seals: 4, anchors: { anchored: 4, unanchored: 0 } });
    expect(after.cli.code).toBe(0);
  });
});
