import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { drizzle } from "drizzle-orm/postgres-js";
import pino from "pino";
import postgres, { type Sql } from "postgres";
import { createAuditAnchorer } from "../runtime/audit/audit-anchorer";
import { invocationChanges, listAuditEntries, rowHistory } from "../runtime/audit/audit-queries";
import { startAuditSealer } from "../runtime/audit/audit-sealer";
import { verifyAudit } from "../runtime/audit/audit-verify";
import { AUDIT_ANCHOR_STREAM, ensureAuditAnchorStream } from "../runtime/nats/audit-anchor-stream";
import { STAMP_SQL } from "./audit-overhead";
import type { RoundContext, Scenario } from "./model";
import { median } from "./stats";

const CONTENDER = "jetfn";
const FUNCTIONS = 10;
/** Rows of the log left unsealed, as while a runtime seals: queries read them directly. */
const UNSEALED_ROWS = 1_000;
const HISTORY_ROW = 42;
const HISTORY_UPDATES = 5;

/**
 * 8. Audit reads: the inspection queries of `jetfn audit` (the SDK functions behind it) on a log of
 * `auditLogRows` rows written by 100 invocations of 10 functions, sealed (as the sealer leaves
 * it) but for a tail of recent writes. Also how fast sealing (with anchoring) and verifying the chain
 * (against its anchors) go.
 */
export const auditReadsScenario: Scenario = {
  id: "audit-reads",
  title: "8. Audit reads on a large log",
  baselines: {},
  targets: [],
  async run(context) {
    const database = await context.services.jetfnDatabase("jetfn_audit_reads");
    const sql = postgres(database.url, { max: 2, onnotice: () => {} });
    const nc = await context.services.connectNats("jetfn-bench-audit-reads");
    try {
      // Each round's database starts a new chain: anchors of an earlier round's chain must go.
      const manager = await jetstreamManager(nc);
      await manager.streams.delete(AUDIT_ANCHOR_STREAM).catch(() => false);
      await ensureAuditAnchorStream(manager);
      const rows = context.sizes.auditLogRows;
      await sql`create table public.items (id bigint primary key, qty integer not null, note text not null)`;
      await fill(sql, rows);
      const sealStarted = performance.now();
      const sealed = await sealAll(sql, nc);
      const sealMs = performance.now() - sealStarted;
      context.record({
        metric: "sealing",
        contender: CONTENDER,
        unit: "rows/s",
        better: "higher",
        value: (sealed * 1000) / sealMs,
      });
      const verifyStarted = performance.now();
      const verified = await verifyAudit(drizzle(sql), nc);
      context.record({
        metric: "verify the whole chain (audit verify)",
        contender: CONTENDER,
        unit: "ms",
        better: "lower",
        value: performance.now() - verifyStarted,
      });
      context.check(
        CONTENDER,
        "the chain verifies against its anchors",
        verified.ok && verified.anchors.unanchored === 0,
        verified.ok
          ? `intact, anchored through seal #${verified.anchors.anchoredThrough}`
          : JSON.stringify(verified.broken),
      );
      await writeTail(sql, rows);
      await measureQueries(context, sql);
    } finally {
      await nc.close();
      await sql.end({ timeout: 5 });
      await database.drop();
    }
  },
};

async function stamped(sql: Sql, fn: string, invocationId: string, statement: string): Promise<void> {
  await sql.begin(async (tx) => {
    await tx.unsafe(STAMP_SQL, [fn, invocationId]);
    await tx.unsafe(statement);
  });
}

/** `rows` inserts by 100 invocations, then a few updates of one row, each its own invocation. */
async function fill(sql: Sql, rows: number): Promise<void> {
  const invocations = 100;
  const perInvocation = Math.ceil(rows / invocations);
  for (let i = 0; i < invocations; i++) {
    const first = i * perInvocation + 1;
    const last = Math.min(rows, first + perInvocation - 1);
    await stamped(
      sql,
      `fn-${i % FUNCTIONS}`,
      `inv-${i}`,
      `insert into items select g, 1, 'note ' || g from generate_series(${first}, ${last}) g`,
    );
  }
  for (let k = 0; k < HISTORY_UPDATES; k++) {
    await stamped(sql, "fn-update", `upd-${k}`, `update items set qty = qty + 1 where id = ${HISTORY_ROW}`);
  }
}

/** Seals (and anchors) the whole log with the runtime's sealer (growing batches while they come back full). */
async function sealAll(sql: Sql, nc: NatsConnection): Promise<number> {
  const logger = pino({ level: "silent" });
  const anchorer = createAuditAnchorer({ sql, js: jetstream(nc), manager: await jetstreamManager(nc), logger });
  const sealer = startAuditSealer(sql, logger, { intervalMs: 3_600_000, anchorer });
  try {
    return await sealer.sealNow();
  } finally {
    await sealer.close();
  }
}

async function writeTail(sql: Sql, rows: number): Promise<void> {
  await stamped(
    sql,
    "fn-tail",
    "inv-tail",
    `insert into items select g, 1, 'tail' from generate_series(${rows + 1}, ${rows + UNSEALED_ROWS}) g`,
  );
}

/** Each query `auditQueryTrials` times; the median per round, checked once. */
async function measureQueries(context: RoundContext, sql: Sql): Promise<void> {
  const db = drizzle(sql);
  const queries: Array<[string, () => Promise<number>, (found: number) => boolean, string]> = [
    [
      `row history (--table items --row ${HISTORY_ROW})`,
      async () => (await rowHistory(db, "items", HISTORY_ROW)).length,
      (found) => found === 1 + HISTORY_UPDATES,
      `${1 + HISTORY_UPDATES} changes`,
    ],
    [
      "one invocation's changes (audit <invocation-id>)",
      async () => [...(await invocationChanges(db, "upd-2")).values()].flat().length,
      (found) => found === 1,
      "1 change",
    ],
    [
      "latest 50 of one function (--function fn-3 --limit 50)",
      async () => (await listAuditEntries(db, { function: "fn-3", limit: 50 })).length,
      (found) => found === 50,
      "50 changes",
    ],
    [
      "latest 50 of one table in the last hour (--table items --since 1h --limit 50)",
      async () =>
        (await listAuditEntries(db, { table: "items", since: new Date(Date.now() - 3_600_000), limit: 50 })).length,
      (found) => found === 50,
      "50 changes",
    ],
    [
      "latest 50 changes (--limit 50)",
      async () => (await listAuditEntries(db, { limit: 50 })).length,
      (found) => found === 50,
      "50 changes",
    ],
  ];
  for (const [metric, query, expected, want] of queries) {
    const times: number[] = [];
    let found = 0;
    for (let trial = 0; trial < context.sizes.auditQueryTrials; trial++) {
      const started = performance.now();
      found = await query();
      times.push(performance.now() - started);
    }
    context.record({ metric, contender: CONTENDER, unit: "ms", better: "lower", value: median(times) });
    context.check(CONTENDER, `${metric}: finds what it should`, expected(found), `${found} found (want ${want})`);
  }
}
