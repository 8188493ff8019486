import type { NatsConnection } from "@nats-io/transport-node";
import type { Sql } from "postgres";

/** What readiness looks at. */
export interface ReadinessSources {
  nats: NatsConnection;
  /** A connection of its own, so a pool busy with jobs does not read as a database that is down. */
  sql: Sql;
  /** Functions loaded from the folder that do not serve yet (no consumer, no puller). */
  undeployed: () => string[];
  /** Where the runtime is in its life. */
  phase: () => RuntimePhase;
  /** Longest each service may take to answer. @default 2000 */
  timeoutMs?: number;
}

/** A runtime's life: deploying, serving, then draining. */
export type RuntimePhase = "starting" | "serving" | "stopping";

const PHASE_VERDICTS: Record<RuntimePhase, string> = {
  starting: "starting",
  serving: "ok",
  stopping: "shutting down",
};

/** One check's verdict: `ok`, or why not. */
export type CheckResult = "ok" | string;

/** Whether the runtime should be given work, and each check's verdict. */
export interface Readiness {
  ready: boolean;
  checks: { runtime: CheckResult; nats: CheckResult; postgres: CheckResult; functions: CheckResult };
}

export const DEFAULT_READINESS_TIMEOUT_MS = 2_000;

/**
 * Returns a check of readiness: the runtime serves (it has started and is not shutting down), NATS
 * answers a round trip, Postgres answers `select 1`, and every loaded function serves. Probes
 * arriving while a check runs share it.
 */
export function createReadinessCheck(sources: ReadinessSources): () => Promise<Readiness> {
  const timeoutMs = sources.timeoutMs ?? DEFAULT_READINESS_TIMEOUT_MS;
  let running: Promise<Readiness> | undefined;
  const check = async (): Promise<Readiness> => {
    const [nats, postgres] = await Promise.all([
      verdict(() => sources.nats.flush(), timeoutMs, "NATS"),
      verdict(async () => void (await sources.sql`select 1`), timeoutMs, "Postgres"),
    ]);
    const undeployed = sources.undeployed();
    const checks = {
      runtime: PHASE_VERDICTS[sources.phase()],
      nats,
      postgres,
      functions: undeployed.length === 0 ? "ok" : `not serving yet: ${undeployed.join(", ")}`,
    };
    return { ready: Object.values(checks).every((result) => result === "ok"), checks };
  };
  return () => {
    running ??= check().finally(() => {
      running = undefined;
    });
    return running;
  };
}

/** `ok` when `probe` resolves within the timeout, else what went wrong. */
async function verdict(probe: () => Promise<void>, timeoutMs: number, service: string): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve(`${service} did not answer within ${timeoutMs} ms`), timeoutMs);
  });
  try {
    return await Promise.race([probe().then((): CheckResult => "ok"), timeout]);
  } catch (error) {
    return `${service}: ${(error as Error).message}`;
  } finally {
    clearTimeout(timer);
  }
}
