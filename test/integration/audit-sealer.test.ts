import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuditSealer, startAuditSealer } from "../../runtime/audit-sealer";
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

describe("the background sealer", () => {
  it("catches up on a backlog in growing batches, and the chain verifies", async () => {
    await database.sql`insert into items select g, 'v' || g from generate_series(1, 2500) g`;
    sealer = startAuditSealer(database.sql, pino({ level: "silent" }), {
      intervalMs: 60_000,
      batchRows: 100,
      maxBatchRows: 1_000,
    });
    // Rows settle once every transaction older than theirs has ended, anywhere on the server
    // (other test files run meanwhile); until then a round seals nothing.
    const deadline = Date.now() + 20_000;
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
});
