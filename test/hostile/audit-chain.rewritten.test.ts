import { afterAll, beforeAll, expect, it } from "vitest";
import { type AuditChainSetup, setUpAuditChain } from "../helpers/audit-chain";

// An edited sealed row is found by recomputing its seal; an edited row whose seal (and every seal
// after it) was recomputed to match is found by the anchors, which keep the original hashes.
let chain: AuditChainSetup;

beforeAll(async () => {
  chain = await setUpAuditChain(3);
});

afterAll(async () => {
  await chain?.close();
});

it("reports an edited sealed row", { timeout: 300_000 }, async () => {
  await chain.insertNotes(6);
  await chain.sealAll();
  expect((await chain.verify()).result.ok).toBe(true);

  await chain.database.sql`
    update jetfn.audit_log set new_row = '{"id": 2, "body": "forged"}' where new_row->>'body' = 'n2'`;
  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.broken).toMatchObject({ seq: 1, problem: "audit rows were altered" });
});

it("reports an edited row whose seals were recomputed to match", { timeout: 300_000 }, async () => {
  // Recompute every seal from the first, as someone holding the database could.
  await chain.database.sql`
    do $$
    declare
      seal jetfn.audit_seals;
      previous text := 'genesis';
      recomputed record;
    begin
      for seal in select * from jetfn.audit_seals order by seq loop
        select * into recomputed from jetfn.audit_range_hash_v3(previous, seal.after_txid, seal.after_id, seal.last_txid, seal.last_id);
        update jetfn.audit_seals set previous_hash = previous, hash = recomputed.hash where seq = seal.seq;
        previous := recomputed.hash;
      end loop;
    end
    $$`;
  expect(await chain.database.sql`select * from jetfn.verify_audit()`).toEqual([]);
  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.broken).toMatchObject({ seq: 1, problem: expect.stringContaining("differs from its anchor") });
});
