import { afterAll, beforeAll, expect, it } from "vitest";
import { type AuditChainSetup, setUpAuditChain } from "../helpers/audit-chain";

// Whoever controls the database can delete an audit row together with every seal, and let the
// sealer seal the rest again: the chain in the database is then consistent with itself. Its seals
// no longer match the anchors kept in NATS, which the database cannot reach.
let chain: AuditChainSetup;

beforeAll(async () => {
  chain = await setUpAuditChain(3);
});

afterAll(async () => {
  await chain?.close();
});

it("reports a chain resealed after a row and every seal were deleted", { timeout: 300_000 }, async () => {
  await chain.insertNotes(9);
  await chain.sealAll();
  const before = await chain.verify();
  expect(before.result).toMatchObject({ ok: true, seals: 3, anchors: { anchored: 3, unanchored: 0 } });

  await chain.database.sql`delete from jetfn.audit_log where new_row->>'body' = 'n5'`;
  await chain.database.sql`delete from jetfn.audit_seals`;
  await chain.database.sql`delete from jetfn.audit_lookup`;
  await chain.sealAll();
  const inDatabase = await chain.database.sql`select * from jetfn.verify_audit()`;
  expect(inDatabase).toEqual([]);

  const after = await chain.verify();
  expect(after.code).not.toBe(0);
  expect(after.result.ok).toBe(false);
  expect(after.result.broken).toMatchObject({ seq: 2, problem: expect.stringContaining("differs from its anchor") });
  expect(after.cli.stdout).not.toContain("chain intact");
});
