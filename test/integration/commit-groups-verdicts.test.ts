import postgres, { type Sql } from "postgres";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { FENCED_OUT_CODE, recordFailure } from "../../runtime/db/invocation-store";
import { createInvocationTransaction, type InvocationTransaction } from "../../runtime/db/invocation-transaction";
import { isSharedCommitFailure } from "../../runtime/db/shared-commit-error";
import { createGroupedDatabase, finalRecord, holdRecord, jobRecord, settle } from "../helpers/commit-groups";
import type { TestDatabase } from "../helpers/database";

// The deadline is 15 s in production; a short one lets a test reach it. Read at each use.
const deadline = vi.hoisted(() => ({ ms: 15_000 }));
vi.mock("../../runtime/db/transaction-parts", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../runtime/db/transaction-parts")>();
  return {
    ...actual,
    get COMMIT_DEADLINE_MS() {
      return deadline.ms;
    },
  };
});

let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
});

afterAll(async () => {
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

afterEach(async () => {
  await groups?.close();
  // A transaction left open on an abandoned connection holds its locks until its session ends.
  await database.sql`
    select pg_terminate_backend(pid) from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and state like 'idle in transaction%'`;
});

beforeEach(async () => {
  deadline.ms = 15_000;
  await database.sql.unsafe("truncate grouped_rows, deferred_rows");
});

let invocation = 0;

function newId(): string {
  return `00000000-0000-4000-9000-${String(++invocation).padStart(12, "0")}`;
}

function transaction(
  id: string,
  attempt = 1,
  options: { grouped?: boolean; statementTimeoutMs?: number } = {},
): InvocationTransaction {
  return createInvocationTransaction(
    pool,
    {
      functionName: "grouped-writer",
      invocationId: id,
      attempt,
      statementTimeoutMs: options.statementTimeoutMs ?? 10_000,
    },
    options.grouped === false ? undefined : groups,
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("commit groups: abandoned transactions and verdicts that wait for the group", () => {
  it("ends the shared transaction of a savepoint end that missed its deadline, so its members can run again alone", async () => {
    deadline.ms = 1_000;
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const member = newId();
    const later = newId();
    // Another attempt of `later` holds its (uncommitted) record, e.g. on another lane: the later
    // attempt's fence waits for it. The server is alive, only a row lock is in the way.
    const holder = await holdRecord(pool, later);

    const memberTx = transaction(member, 1);
    const laterTx = transaction(later, 2);
    await memberTx.db.execute(`insert into grouped_rows (id, n) values ('${member}', 1)`);
    // The later attempt waits for the lane; the member's COMMIT waits for it.
    const laterDone = settle(laterTx, async () => {
      await laterTx.db.execute(`insert into grouped_rows (id, n) values ('${later}', 2)`);
      await laterTx.commit(finalRecord(later, 2));
    });
    await sleep(50);
    const memberDone = settle(memberTx, () => memberTx.commit(finalRecord(member, 1)));
    const [memberOutcome, laterOutcome] = await Promise.allSettled([memberDone, laterDone]);
    // The deadline passed: both are told to run again (the member alone).
    expect(memberOutcome.status).toBe("rejected");
    expect(isSharedCommitFailure((memberOutcome as PromiseRejectedResult).reason)).toBe(true);
    expect(laterOutcome).toMatchObject({ status: "rejected", reason: { code: "E_DATABASE_UNAVAILABLE" } });

    // The other attempt gives up; the lock is gone.
    await holder.unsafe("rollback");
    holder.release();
    await sleep(200);

    // The member runs again alone, as job-runner does after a SharedCommitError.
    const alone = transaction(member, 1, { grouped: false, statementTimeoutMs: 2_000 });
    const rerun = settle(alone, async () => {
      await alone.db.execute(`insert into grouped_rows (id, n) values ('${member}', 1)`);
      await alone.commit(finalRecord(member, 1));
    });
    const rerunOutcome = await rerun.then(
      () => "committed",
      (error: Error) => `${error.message} / ${(error.cause as Error | undefined)?.message}`,
    );
    const stuck = await database.sql<{ state: string }[]>`
      select state from pg_stat_activity
      where datname = current_database() and state like 'idle in transaction%'`;
    expect({ rerunOutcome, stuck: stuck.map((row) => row.state) }).toEqual({ rerunOutcome: "committed", stuck: [] });
  });

  it("does not judge a later attempt's failed statement before its group commits (its cause may roll back)", async () => {
    // Attempt 1 and attempt 2 of one job in one group (as in the fenced-attempt fix), but here
    // attempt 2's own write hits attempt 1's uncommitted row. The group's COMMIT then fails: attempt
    // 1's row is gone, yet attempt 2 was already told its handler failed.
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const job = newId();
    const first = transaction(job, 1);
    const second = transaction(job, 2);
    const breakerId = newId();
    const breaker = transaction(breakerId, 1);
    const results = await Promise.allSettled([
      settle(first, async () => {
        await first.db.execute(`insert into grouped_rows (id, n) values ('order-${job}', 1)`);
        await first.db.execute(`insert into deferred_rows (id, twin) values ('a', 'same')`);
        await first.commit(finalRecord(job, 1));
      }),
      settle(second, async () => {
        // The handler's idempotent write: the same key as attempt 1's.
        await second.db.execute(`insert into grouped_rows (id, n) values ('order-${job}', 2)`);
        await second.commit(finalRecord(job, 2));
      }),
      settle(breaker, async () => {
        await breaker.db.execute(`insert into deferred_rows (id, twin) values ('c', 'same')`);
        await breaker.commit();
      }),
    ]);
    // The group's COMMIT failed: attempt 1 and the breaker run again alone.
    expect(isSharedCommitFailure((results[0] as PromiseRejectedResult).reason)).toBe(true);
    expect(isSharedCommitFailure((results[2] as PromiseRejectedResult).reason)).toBe(true);
    const [kept] = await database.sql`select count(*)::int as count from grouped_rows`;
    expect(kept?.count).toBe(0);

    // What job-runner makes of attempt 2's outcome. Attempt 2 is its last attempt (attempts: 2),
    // so a handler failure is final: bury() records it dead. Attempt 1 then runs alone and is fenced.
    const secondError = (results[1] as PromiseRejectedResult).reason;
    if (!isSharedCommitFailure(secondError)) {
      await recordFailure(pool, jobRecord(job, 2), "dead", {
        attempt: 2,
        code: "E_HANDLER_FAILED",
        name: "PostgresError",
        message: String((secondError as Error).message),
        at: new Date().toISOString(),
      });
    }
    const alone = transaction(job, 1, { grouped: false });
    const rerun = settle(alone, async () => {
      await alone.db.execute(`insert into grouped_rows (id, n) values ('order-${job}', 1)`);
      await alone.commit(finalRecord(job, 1));
    });
    const rerunOutcome = await rerun.then(
      () => "committed",
      (error: { code?: unknown }) => (error.code === FENCED_OUT_CODE ? "fenced" : String(error)),
    );
    const [status] = await database.sql`select status from jetfn.invocations where id = ${job}`;
    // Nothing of the job was ever applied, and no attempt failed on its own merits.
    const secondSaw = isSharedCommitFailure(secondError)
      ? "runs again alone"
      : `failed: ${(secondError as Error).message.slice(0, 60)} / ${((secondError as Error).cause as Error | undefined)?.message}`;
    expect({ secondSaw, rerunOutcome, status: status?.status }).toEqual({
      secondSaw: "runs again alone",
      rerunOutcome: "committed",
      status: "succeeded",
    });
  });
  it("does not let a statement of an abandoned transaction doom the lane's next transaction", async () => {
    deadline.ms = 1_000;
    groups = createCommitGroups(pool, { lanes: 1 });
    const job = newId();
    // Another copy of the job holds its (uncommitted) record: this copy's final record waits for it.
    const holder = await holdRecord(pool, job);

    const copy = transaction(job, 1);
    const copyDone = settle(copy, async () => {
      await copy.db.execute(`insert into grouped_rows (id, n) values ('${job}', 1)`);
      // Nobody waits: the lane commits at once; its COMMIT waits behind the final record and misses the deadline.
      await copy.commit(finalRecord(job, 1));
    });
    await expect(copyDone).rejects.toSatisfy(isSharedCommitFailure);

    // A new job on the lane (a new connection, a new transaction).
    const next = newId();
    const nextTx = transaction(next, 1);
    await nextTx.db.execute(`insert into grouped_rows (id, n) values ('${next}', 2)`);
    // The other copy commits: on the abandoned connection the final record is now refused by the fence.
    await holder.unsafe("commit");
    holder.release();
    await sleep(200);
    const nextOutcome = await settle(nextTx, () => nextTx.commit(finalRecord(next, 1))).then(
      () => "committed",
      (error: Error) => `${isSharedCommitFailure(error) ? "SharedCommitError" : "failed"}: ${error.message}`,
    );
    expect(nextOutcome).toBe("committed");
  });
  it("gives a connection whose COMMIT missed its deadline back to the pool once it answers", async () => {
    deadline.ms = 1_000;
    // A pool of one: a connection never given back would stall every later query.
    const single = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const job = newId();
      // Another copy of the job holds its record: this copy's final record, and its COMMIT, wait.
      const holder = await holdRecord(pool, job);

      const tx = createInvocationTransaction(single, {
        functionName: "grouped-writer",
        invocationId: job,
        attempt: 1,
        statementTimeoutMs: 10_000,
      });
      await tx.db.execute(`insert into grouped_rows (id, n) values ('${job}', 1)`);
      await expect(tx.commit(finalRecord(job, 1))).rejects.toMatchObject({
        code: "E_DATABASE_UNAVAILABLE",
      });

      // The other copy gives up: the COMMIT goes through late (the fence settles the retry).
      await holder.unsafe("rollback");
      holder.release();
      const answer = single<{ count: number }[]>`select count(*)::int as count from grouped_rows where id = ${job}`;
      const stalled = sleep(5_000).then(() => "the pool's only connection never came back");
      expect(await Promise.race([answer.then(([row]) => row?.count), stalled])).toBe(1);
    } finally {
      await single.end({ timeout: 2 });
    }
  });
});
