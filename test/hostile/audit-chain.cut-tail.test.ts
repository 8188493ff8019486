import { afterAll, beforeAll, expect, it } from "vitest";
import { type AuditChainSetup, setUpAuditChain } from "../helpers/audit-chain";

// Deleting the newest audit rows together with their seals, in one transaction, leaves a shorter
// chain that is consistent with itself. The anchors in NATS still name the seals that were cut.
let chain: AuditChainSetup;

beforeAll(async () => {
  chain = await setUpAuditChain(3);
});

afterAll(async () => {
  await chain?.close();
});

it("reports the newest rows deleted with their seals", { timeout: 300_000 }, async () => {
  await chain.insertNotes(9);
  await chain.sealAll();
  expect((await chain.verify()).result).toMatchObject({ ok: true, seals: 3, anchors: { anchored: 3 } });

  await chain.database.sql.begin(async (tx) => {
    const [last] = await tx`select after_txid, after_id from jetfn.audit_seals where seq = 3`;
    await tx`delete from jetfn.audit_log where (txid, id) > (${last?.after_txid}, ${last?.after_id})`;
    await tx`delete from jetfn.audit_seals where seq = 3`;
  });
  expect(await chain.database.sql`select * from jetfn.verify_audit()`).toEqual([]);

  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.broken).toMatchObject({ seq: 3, problem: expect.stringContaining("the chain was cut") });
  expect(after.cli.stdout).not.toContain("chain intact");
});

it("reports a deleted seal that later seals outlive", { timeout: 300_000 }, async () => {
  // Seal 1 goes; the database's own check sees a broken link, and the anchors see the gap.
  await chain.database.sql`delete from jetfn.audit_seals where seq = 1`;
  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.problems).toContainEqual(
    expect.objectContaining({ seq: 1, problem: expect.stringContaining("the seal was deleted") }),
  );
});
