import type { JsMsg } from "@nats-io/jetstream";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { defineFunction, NonRetryableError, z } from "../../runtime";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { BENCH_ACK_WAIT_MS, benchFunction, type JobRunnerBench, startJobRunnerBench } from "../helpers/job-runner";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// Group commit's failure paths driven through runJob() on real JetStream deliveries, so what each
// delivery's message gets (ack, nak, term, nothing) is the server's real answer: on nats-server, an
// ack, nak or term sent on any delivery of a message counts for the message, so once one delivery
// is acked, a later nak of another delivery retries nothing.

let nats: TestNatsServer;
let database: TestDatabase;

/** A gate the test opens. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/** What each run of a handler does, by job, attempt and run (a lone rerun is run 2 of its attempt). */
type Script = (step: { job: string; role: string; attempt: number; run: number }) => {
  /** The unique value of the row it writes (a fresh one unless given). */
  twin?: string;
  /** Waited for once the row is written (the job holds the lane meanwhile). */
  before?: () => Promise<void>;
  recoverFromFailedStatement?: boolean;
  /** Then fails if a row with this twin is visible to it. */
  failIfVisible?: string;
  /** Then fails, for a passing reason (retried) or finally (NonRetryableError). */
  fail?: string;
  failFinally?: string;
};

/** A function whose handler writes one row per run and follows the test's script. */
function scriptedWriter(name: string, script: { current: Script }) {
  const runs = new Map<string, number>();
  return benchFunction(
    name,
    defineFunction({
      input: z.object({ role: z.string() }),
      concurrency: 8,
      timeout: "20s",
      retry: { attempts: 5, backoff: "100ms" },
      async handler({ role }, ctx) {
        const key = `${ctx.invocationId}:${ctx.attempt}`;
        const run = (runs.get(key) ?? 0) + 1;
        runs.set(key, run);
        const step = script.current({ job: ctx.invocationId, role, attempt: ctx.attempt, run });
        await ctx.db.execute(
          sql`insert into failure_rows (job, attempt, run, twin) values (${ctx.invocationId}, ${ctx.attempt}, ${run}, ${step.twin ?? `${key}:${run}`})`,
        );
        await step.before?.();
        if (step.recoverFromFailedStatement) {
          // A statement fails inside a savepoint of the handler's own, which it rolls back.
          await ctx.db.transaction(async (tx) => tx.execute(sql`select 1 / 0`)).catch(() => undefined);
        }
        if (step.failIfVisible !== undefined) {
          const seen = (await ctx.db.execute(
            sql`select count(*)::int as count from failure_rows where twin = ${step.failIfVisible}`,
          )) as unknown as { count: number }[];
          if (seen[0]?.count) throw new NonRetryableError(`a row with twin ${step.failIfVisible} exists`);
        }
        if (step.fail) throw new Error(step.fail);
        if (step.failFinally) throw new NonRetryableError(step.failFinally);
        return null;
      },
    }),
  );
}

const script: { current: Script } = { current: () => ({}) };
const writer = scriptedWriter("failure-writer", script);

beforeAll(async () => {
  [nats, database] = await Promise.all([startNatsServer(), createTestDatabase()]);
  // Two rows with the same twin fail the shared transaction (the unique check is deferred to the
  // end of the second writer's part, which, for a clean first attempt, dooms the transaction).
  await database.sql`
    create table failure_rows (
      id bigserial primary key, job text not null, attempt int not null, run int not null,
      twin text not null unique deferrable initially deferred)`;
});

afterAll(async () => {
  await nats?.stop();
  await database?.drop();
});

async function startBench(): Promise<JobRunnerBench> {
  const bench = await startJobRunnerBench(nats, database, [writer]);
  onTestFinished(() => bench.close());
  return bench;
}

/** The job's record and how many of its runs' writes were kept. */
async function outcome(job: string): Promise<{ status: string | undefined; rows: number }> {
  const [record] = await database.sql`select status from jetfn.invocations where id = ${job}`;
  const [kept] = await database.sql`select count(*)::int as rows from failure_rows where job = ${job}`;
  return { status: record?.status as string | undefined, rows: kept?.rows as number };
}

describe("group commit failure paths, through runJob and real deliveries", () => {
  it("retries a job whose two deliveries shared a transaction that failed, when the first's lone rerun fails for a passing reason", {
    timeout: 90_000,
  }, async () => {
    const bench = await startBench();
    const firstHolds = gate();
    const job = await bench.publish(writer, { role: "job" });
    script.current = ({ role, attempt, run }) => {
      if (role === "breaker") return run === 1 ? { twin: "same" } : {};
      if (attempt === 1 && run === 1) {
        // Holds the lane until the second delivery and the breaker wait for it; then its record is
        // written at once (a statement of it failed, so it is checked), before the second's fence.
        return { twin: "same", before: () => firstHolds.opened, recoverFromFailedStatement: true };
      }
      if (attempt === 1) return { fail: "a passing failure on the lone rerun" };
      return {};
    };
    const first = (await bench.next(writer)) as JsMsg;
    // Not pinged: the first delivery's lease lapses while it holds the lane, and the message is
    // delivered again (the second delivery's pings then keep it).
    const firstDone = bench.run(writer, first, { ping: false });
    await bench.seated(job, 1);
    const second = (await bench.next(writer, 3 * BENCH_ACK_WAIT_MS + 5_000)) as JsMsg;
    expect({ id: second?.headers?.get("Jetfn-Id"), delivery: second?.info.deliveryCount }).toEqual({
      id: job,
      delivery: 2,
    });
    const secondDone = bench.run(writer, second);
    const breaker = await bench.publish(writer, { role: "breaker" });
    const breakerDone = bench.run(writer, (await bench.next(writer)) as JsMsg);
    await Promise.all([bench.seated(job, 2), bench.seated(breaker, 1)]);
    firstHolds.open();
    await Promise.all([firstDone, secondDone, breakerDone]);
    // The shared transaction failed (the breaker's twin); now act as the puller until nothing is left.
    await bench.drain(writer);
    expect(bench.logs.matching("shared transaction did not commit").length).toBeGreaterThan(0);
    expect({ job: await outcome(job), breaker: await outcome(breaker) }).toEqual({
      job: { status: "succeeded", rows: 1 },
      breaker: { status: "succeeded", rows: 1 },
    });
  });

  it("retries a job whose two deliveries were in one group its fence rolled back, when the first's lone rerun fails for a passing reason", {
    timeout: 90_000,
  }, async () => {
    const bench = await startBench();
    const firstHolds = gate();
    const job = await bench.publish(writer, { role: "job" });
    script.current = ({ attempt, run }) => {
      // The first delivery's record goes with the group's, just before the COMMIT; the second's
      // (a later attempt's, checked) goes first, so the group's record finds the job finished.
      if (attempt === 1 && run === 1) return { before: () => firstHolds.opened };
      if (attempt === 1) return { fail: "a passing failure on the lone rerun" };
      return {};
    };
    const first = (await bench.next(writer)) as JsMsg;
    const firstDone = bench.run(writer, first, { ping: false });
    await bench.seated(job, 1);
    const second = (await bench.next(writer, 3 * BENCH_ACK_WAIT_MS + 5_000)) as JsMsg;
    expect(second?.info.deliveryCount).toBe(2);
    const secondDone = bench.run(writer, second);
    await bench.seated(job, 2);
    firstHolds.open();
    await Promise.all([firstDone, secondDone]);
    await bench.drain(writer);
    const rolledBack = bench.logs.matching("shared transaction did not commit");
    expect(rolledBack.map((line) => line.attempt).sort()).toEqual([1, 2]);
    expect(await outcome(job)).toEqual({ status: "succeeded", rows: 1 });
  });

  it("judges a member's failure only once its group commits: what it read of the others may never commit", {
    timeout: 90_000,
  }, async () => {
    const bench = await startBench();
    const writerHolds = gate();
    const marked = await bench.publish(writer, { role: "marks" });
    const reader = await bench.publish(writer, { role: "reads" });
    const breaker = await bench.publish(writer, { role: "breaker" });
    script.current = ({ role, run }) => {
      if (role === "marks") {
        // Its row is what the reader sees; the breaker's same twin then fails the shared COMMIT,
        // and alone it fails for good, so its row never commits.
        return run === 1 ? { twin: "marker", before: () => writerHolds.opened } : { failFinally: "gives up alone" };
      }
      if (role === "reads") return { failIfVisible: "marker" };
      return run === 1 ? { twin: "marker" } : {};
    };
    const deliveries = await Promise.all([bench.next(writer), bench.next(writer), bench.next(writer)]);
    const byId = new Map(deliveries.map((message) => [message?.headers?.get("Jetfn-Id"), message as JsMsg]));
    const markedDone = bench.run(writer, byId.get(marked) as JsMsg);
    await bench.seated(marked, 1);
    const readerDone = bench.run(writer, byId.get(reader) as JsMsg);
    await bench.seated(reader, 1);
    const breakerDone = bench.run(writer, byId.get(breaker) as JsMsg);
    await bench.seated(breaker, 1);
    writerHolds.open();
    await Promise.all([markedDone, readerDone, breakerDone]);
    await bench.drain(writer);
    const [readerRecord] = await database.sql`select status, error from jetfn.invocations where id = ${reader}`;
    expect({
      marked: await outcome(marked),
      reader: await outcome(reader),
      readerError: (readerRecord?.error as { message?: string } | null)?.message ?? null,
      breaker: await outcome(breaker),
    }).toEqual({
      marked: { status: "dead", rows: 0 },
      reader: { status: "succeeded", rows: 1 },
      readerError: null,
      breaker: { status: "succeeded", rows: 1 },
    });
  });

  it("buries a member whose lone rerun fails for good, and terminates its message", { timeout: 90_000 }, async () => {
    const bench = await startBench();
    const memberHolds = gate();
    const member = await bench.publish(writer, { role: "member" });
    const breaker = await bench.publish(writer, { role: "breaker" });
    script.current = ({ role, run }) => {
      if (role === "member") {
        return run === 1 ? { twin: "twice", before: () => memberHolds.opened } : { failFinally: "gives up alone" };
      }
      return run === 1 ? { twin: "twice" } : {};
    };
    const deliveries = await Promise.all([bench.next(writer), bench.next(writer)]);
    const byId = new Map(deliveries.map((message) => [message?.headers?.get("Jetfn-Id"), message as JsMsg]));
    const memberDone = bench.run(writer, byId.get(member) as JsMsg);
    await bench.seated(member, 1);
    const breakerDone = bench.run(writer, byId.get(breaker) as JsMsg);
    await bench.seated(breaker, 1);
    memberHolds.open();
    await Promise.all([memberDone, breakerDone]);
    // Nothing is delivered again: the member's message was terminated, the breaker's acked.
    expect(await bench.drain(writer)).toEqual([]);
    expect({ member: await outcome(member), breaker: await outcome(breaker) }).toEqual({
      member: { status: "dead", rows: 0 },
      breaker: { status: "succeeded", rows: 1 },
    });
  });
});
