import { afterAll, beforeAll, expect, it } from "vitest";
import { type AuditChainSetup, setUpAuditChain } from "../helpers/audit-chain";

// Pruning drops the oldest seals with their rows and records, in the database, where the chain
// resumes. Whoever controls the database can write that record too, and so make the oldest rows
// vanish as if pruned. A prune only counts when it is also recorded in NATS, which `jetfn audit
// prune` does before it commits.
let chain: AuditChainSetup;

beforeAll(async () => {
  chain = await setUpAuditChain(3);
});

afterAll(async () => {
  await chain?.close();
});

it("reports the oldest rows deleted behind a prune recorded only in the database", { timeout: 300_000 }, async () => {
  await chain.insertNotes(9);
  await chain.sealAll();
  expect((await chain.verify()).result).toMatchObject({ ok: true, seals: 3, anchors: { anchored: 3 } });

  await chain.database.sql.begin(async (tx) => {
    const [first] = await tx`select last_txid, last_id, hash from jetfn.audit_seals where seq = 1`;
    await tx`delete from jetfn.audit_log where (txid, id) <= (${first?.last_txid}, ${first?.last_id})`;
    await tx`delete from jetfn.audit_seals where seq = 1`;
    await tx`insert into jetfn.audit_anchors (seq, hash, reason) values (1, ${first?.hash}, 'pruned audit_log_2020_01')`;
  });
  expect(await chain.database.sql`select * from jetfn.verify_audit()`).toEqual([]);

  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.broken).toMatchObject({ seq: 1, problem: expect.stringContaining("the seal was deleted") });
});
