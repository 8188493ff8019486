import {
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StoredMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { addStreamIfMissing, type Replication, replicationConfig, SINGLE_REPLICA } from "./stream-replicas";

/**
 * The stream holding the audit chain's anchors: each seal's hash and range, and each prune. It
 * lives in NATS, where the database (and whoever controls it) cannot rewrite it.
 */
export const AUDIT_ANCHOR_STREAM = "JETFN_AUDIT_ANCHORS";
/** A seal's anchor: `jetfn.audit.seal.<seq>`, one message per seal. */
export const SEAL_ANCHOR_PREFIX = "jetfn.audit.seal.";
/** A prune's record: seals up to `throughSeq` may be gone from the database. */
export const PRUNE_ANCHOR_SUBJECT = "jetfn.audit.pruned";

/** What a seal's anchor fixes: everything verify compares with the seal in the database. */
export interface SealAnchor {
  seq: number;
  hash: string;
  previousHash: string;
  afterTxid: number;
  afterId: number;
  lastTxid: number;
  lastId: number;
  rowCount: number;
  format: number;
}

/** A prune: the seals up to `throughSeq` were dropped with their rows, on purpose. */
export interface PruneAnchor {
  throughSeq: number;
  hash: string;
  reason: string;
}

/** Everything in the anchor stream. */
export interface AuditAnchors {
  /** False when the stream does not exist. */
  exists: boolean;
  seals: SealAnchor[];
  prunes: PruneAnchor[];
}

const FETCH_BATCH = 1_000;
const FETCH_EXPIRES_MS = 5_000;

/**
 * Creates the anchor stream: file storage, kept forever, and neither messages nor the stream's
 * contents can be deleted through the JetStream API (deny_delete, deny_purge).
 */
export async function ensureAuditAnchorStream(
  manager: JetStreamManager,
  replication: Replication = SINGLE_REPLICA,
): Promise<void> {
  const config: Partial<StreamConfig> & { name: string } = {
    name: AUDIT_ANCHOR_STREAM,
    subjects: [`${SEAL_ANCHOR_PREFIX}*`, PRUNE_ANCHOR_SUBJECT],
    description: "jetfn audit chain anchors: one message per seal, one per prune",
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    deny_delete: true,
    deny_purge: true,
    ...replicationConfig(replication),
  };
  await addStreamIfMissing(manager, config, replication);
}

/**
 * Publishes a seal's anchor unless one exists for its seq (the server checks, so two runtimes, or
 * a rewritten chain, never replace an anchor). Resolves "anchored" once the server acknowledged
 * it, or with the anchor already there.
 */
export async function publishSealAnchor(
  js: JetStreamClient,
  manager: JetStreamManager,
  anchor: SealAnchor,
): Promise<"anchored" | SealAnchor> {
  const subject = sealAnchorSubject(anchor.seq);
  try {
    await js.publish(subject, JSON.stringify(anchor), { expect: { lastSubjectSequence: 0 } });
    return "anchored";
  } catch (error) {
    if ((error as { code?: unknown }).code !== JetStreamApiCodes.StreamWrongLastSequence) throw error;
    const stored = await manager.streams.getMessage(AUDIT_ANCHOR_STREAM, { last_by_subj: subject });
    if (!stored) throw error;
    return parseSealAnchor(stored);
  }
}

/**
 * The seq of a seal anchored last, or 0 when the stream holds none. Seals are anchored in order
 * (see createAuditAnchorer), so every seal below it that still existed then is anchored too.
 */
export async function lastAnchoredSeq(manager: JetStreamManager): Promise<number> {
  const info = await manager.streams.info(AUDIT_ANCHOR_STREAM);
  for (let seq = info.state.last_seq; seq >= info.state.first_seq && seq > 0; seq--) {
    const stored = await manager.streams.getMessage(AUDIT_ANCHOR_STREAM, { seq }).catch(() => null);
    if (stored?.subject.startsWith(SEAL_ANCHOR_PREFIX)) return parseSealAnchor(stored).seq;
  }
  return 0;
}

/** Records a prune, before its seals and rows are dropped. */
export async function publishPruneAnchor(js: JetStreamClient, prune: PruneAnchor): Promise<void> {
  await js.publish(PRUNE_ANCHOR_SUBJECT, JSON.stringify(prune));
}

/** Reads the whole anchor stream with an ordered consumer. */
export async function readAuditAnchors(nc: NatsConnection): Promise<AuditAnchors> {
  const manager = await jetstreamManager(nc);
  const info = await manager.streams.info(AUDIT_ANCHOR_STREAM).catch(() => undefined);
  const anchors: AuditAnchors = { exists: info !== undefined, seals: [], prunes: [] };
  if (!info || info.state.messages === 0) return anchors;
  const lastSeq = info.state.last_seq;
  const consumer = await jetstream(nc).consumers.get(AUDIT_ANCHOR_STREAM, { deliver_policy: DeliverPolicy.All });
  for (;;) {
    const batch = await consumer.fetch({ max_messages: FETCH_BATCH, expires: FETCH_EXPIRES_MS });
    let received = 0;
    let done = false;
    for await (const message of batch) {
      received++;
      if (message.subject === PRUNE_ANCHOR_SUBJECT) anchors.prunes.push(message.json<PruneAnchor>());
      else anchors.seals.push(message.json<SealAnchor>());
      if (message.seq >= lastSeq || message.info.pending === 0) {
        done = true;
        break;
      }
    }
    if (done) batch.stop();
    if (done || received === 0) return anchors;
  }
}

function sealAnchorSubject(seq: number): string {
  return `${SEAL_ANCHOR_PREFIX}${seq}`;
}

function parseSealAnchor(stored: StoredMsg): SealAnchor {
  return stored.json<SealAnchor>();
}
