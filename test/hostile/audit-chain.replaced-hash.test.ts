import { afterAll, beforeAll, expect, it } from "vitest";
import { type AuditChainSetup, setUpAuditChain } from "../helpers/audit-chain";

// The database's owner can replace jetfn's functions as well as its rows: a hash function that
// returns the sealed hash whatever the rows hold makes the database's own check pass over an edited
// row. Verify recomputes the hashes with built-in functions only, so the edit still shows.
let chain: AuditChainSetup;

beforeAll(async () => {
  chain = await setUpAuditChain(3);
});

afterAll(async () => {
  await chain?.close();
});

it("reports an edited row behind a replaced hash function", { timeout: 300_000 }, async () => {
  await chain.insertNotes(6);
  await chain.sealAll();
  expect((await chain.verify()).result.ok).toBe(true);

  await chain.database
    .sql`update jetfn.audit_log set new_row = '{"id": 5, "body": "forged"}' where new_row->>'body' = 'n5'`;
  await chain.database.sql.unsafe(`
    create or replace function jetfn.audit_range_hash_v3(previous_hash text, after_txid bigint, after_id bigint, last_txid bigint, last_id bigint)
    returns table (hash text, row_count integer)
    language sql stable as $$
      select s.hash, s.row_count from jetfn.audit_seals s where s.last_txid = $4 and s.last_id = $5
    $$`);
  expect(await chain.database.sql`select * from jetfn.verify_audit()`).toEqual([]);

  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.broken).toMatchObject({ seq: 2, problem: "audit rows were altered" });
});
