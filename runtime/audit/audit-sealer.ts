import type { Logger } from "pino";
import type { Sql } from "postgres";
import { isConnectionError } from "../db/client";
import type { AuditAnchorer } from "./audit-anchorer";

/** Seals settled audit rows into the hash chain in the background, in batches, and anchors the seals. */
export interface AuditSealer {
  /** Seals everything settled now and anchors every seal not anchored yet; resolves with the rows sealed. */
  sealNow(): Promise<number>;
  close(): Promise<void>;
}

/** Options of the sealer. */
export interface AuditSealerOptions {
  /** Pause between rounds when there is nothing (left) to seal. @default 1000 */
  intervalMs?: number;
  /** Rows per seal. @default 10000 */
  batchRows?: number;
  /** Most rows per seal while catching up (batches grow while they come back full). @default 100000 */
  maxBatchRows?: number;
  /** Publishes each seal's anchor after its commit. @default none (seals stay unanchored) */
  anchorer?: AuditAnchorer;
}

export const DEFAULT_SEAL_INTERVAL_MS = 1_000;
export const DEFAULT_SEAL_BATCH_ROWS = 10_000;
export const DEFAULT_MAX_SEAL_BATCH_ROWS = 100_000;
/** How much a full batch's successor grows. */
const BATCH_GROWTH = 4;

/**
 * Starts sealing. Every runtime runs one; Postgres lets one seal at a time (an advisory lock in
 * jetfn.seal_audit) and the others skip the round, so writers are never held up.
 */
export function startAuditSealer(sql: Sql, logger: Logger, options: AuditSealerOptions = {}): AuditSealer {
  const intervalMs = options.intervalMs ?? DEFAULT_SEAL_INTERVAL_MS;
  const batchRows = options.batchRows ?? DEFAULT_SEAL_BATCH_ROWS;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();

  const maxBatchRows = Math.max(batchRows, options.maxBatchRows ?? DEFAULT_MAX_SEAL_BATCH_ROWS);

  // Each batch scans every unsealed row to find the oldest ones (the log has no b-tree, to keep
  // writes cheap), so a backlog (after a runtime was down) is sealed in growing batches: fewer
  // scans of it. Batches are bounded because a seal hashes its rows' text in one piece.
  const sealBatches = async (): Promise<number> => {
    let total = 0;
    let rows = batchRows;
    for (;;) {
      const [row] = await sql<{ sealed: number }[]>`select jetfn.seal_audit(${rows}) as sealed`;
      const sealed = row?.sealed ?? 0;
      total += sealed;
      if (sealed < rows || closed) break;
      rows = Math.min(rows * BATCH_GROWTH, maxBatchRows);
    }
    // Queries find sealed rows and the unsealed tail through the log's BRIN index: summarize the
    // block ranges filled since, rather than leave them to autovacuum's next run.
    if (total > 0) await sql`select jetfn.summarize_audit_ranges()`;
    return total;
  };

  // Anchoring runs every round, not only after a seal: it also picks up seals another runtime
  // committed but could not anchor (it stopped, or NATS was away).
  const anchor = async (): Promise<void> => {
    await options.anchorer?.anchorPending();
  };

  const sealNow = async (): Promise<number> => {
    const sealed = await sealBatches();
    await anchor();
    return sealed;
  };

  // One warning per NATS outage, not one a second.
  let anchoring = true;
  const round = async (): Promise<void> => {
    await sealBatches().catch((error: unknown) => {
      if (!isConnectionError(error)) logger.error({ err: error }, "Sealing the audit log failed; retrying.");
    });
    await anchor().then(
      () => {
        if (!anchoring) logger.info("Audit seals are anchored in NATS again.");
        anchoring = true;
      },
      (error: unknown) => {
        if (anchoring)
          logger.warn({ err: error }, "Publishing audit seal anchors to NATS failed; retrying each round.");
        anchoring = false;
      },
    );
  };

  const schedule = (): void => {
    if (closed) return;
    timer = setTimeout(() => {
      running = round().finally(schedule);
    }, intervalMs);
    timer.unref();
  };
  schedule();

  return {
    sealNow: () => {
      const next = running.then(sealNow, sealNow);
      running = next.catch(() => undefined);
      return next;
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      await running.catch(() => undefined);
    },
  };
}
