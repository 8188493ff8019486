import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import pino from "pino";
import { createAuditAnchorer } from "../../runtime/audit/audit-anchorer";
import { type AuditSealer, startAuditSealer } from "../../runtime/audit/audit-sealer";
import { ensureAuditAnchorStream } from "../../runtime/nats/audit-anchor-stream";
import { type CliResult, runCli } from "./cli";
import { createTestDatabase, type TestDatabase } from "./database";
import { startNatsServer, type TestNatsServer } from "./nats-server";

/** A database with a `notes` table, a NATS server, and a sealer that anchors its seals there. */
export interface AuditChainSetup {
  database: TestDatabase;
  nats: TestNatsServer;
  nc: NatsConnection;
  sealer: AuditSealer;
  /** Inserts `count` notes in one transaction (one audit row each). */
  insertNotes(count: number, prefix?: string): Promise<void>;
  /** Seals (and anchors) until every row is sealed, waiting for rows to settle. */
  sealAll(): Promise<void>;
  /** `jetfn audit verify --json`, parsed, with its exit code. */
  verify(): Promise<{ code: number; result: VerifyJson; cli: CliResult }>;
  close(): Promise<void>;
}

/** What `jetfn audit verify --json` prints (the fields tests look at). */
export interface VerifyJson {
  ok: boolean;
  broken: { seq: number; problem: string; expectedRows: number | null; foundRows: number | null } | null;
  problems: { seq: number; problem: string }[];
  seals: number;
  anchors: { anchored: number; unanchored: number; anchoredThrough: number };
}

/** Starts the servers, creates `notes`, and starts a sealer (batches of `batchRows`) with an anchorer. */
export async function setUpAuditChain(batchRows = 100): Promise<AuditChainSetup> {
  const [database, nats] = await Promise.all([createTestDatabase(), startNatsServer()]);
  await database.sql`create table notes (id serial primary key, body text)`;
  const nc = await connect({ servers: nats.url });
  const manager = await jetstreamManager(nc);
  await ensureAuditAnchorStream(manager);
  const logger = pino({ level: "silent" });
  const anchorer = createAuditAnchorer({ sql: database.sql, js: jetstream(nc), manager, logger });
  const sealer = startAuditSealer(database.sql, logger, {
    intervalMs: 600_000,
    batchRows,
    maxBatchRows: batchRows,
    anchorer,
  });
  const setup: AuditChainSetup = {
    database,
    nats,
    nc,
    sealer,
    async insertNotes(count, prefix = "n") {
      await database.sql`insert into notes (body) select ${prefix} || g from generate_series(1, ${count}) g`;
    },
    async sealAll() {
      // A seal only covers transactions older than the oldest one still running anywhere on the
      // server, so with other test files busy it may take a few rounds.
      const deadline = Date.now() + 120_000;
      for (;;) {
        await setup.sealer.sealNow();
        const [lag] = await database.sql`select unsealed_rows::int as rows from jetfn.audit_seal_lag()`;
        if (lag?.rows === 0) return;
        if (Date.now() > deadline)
          throw new Error(
            `${lag?.rows} audit row(s) could not be sealed within 120s (a transaction elsewhere on the server may be holding them back)`,
          );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async verify() {
      const cli = await runCli(["audit", "verify", "--json"], { DATABASE_URL: database.url, NATS_URL: nats.url });
      if (!cli.stdout.trim()) throw new Error(`audit verify printed nothing: ${cli.stderr}`);
      return { code: cli.code, result: JSON.parse(cli.stdout) as VerifyJson, cli };
    },
    async close() {
      await sealer.close();
      await nc.close();
      await Promise.allSettled([nats.stop(), database.drop()]);
    },
  };
  return setup;
}
