import type { Sql } from "postgres";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { FENCED_OUT_CODE } from "../../runtime/db/invocation-store";
import { createInvocationTransaction, type InvocationTransaction } from "../../runtime/db/invocation-transaction";
import { isSharedCommitFailure } from "../../runtime/db/shared-commit-error";
import type { FinalStatement } from "../../runtime/db/transaction-parts";
import { createGroupedDatabase, finalRecord, settle } from "../helpers/commit-groups";
import type { TestDatabase } from "../helpers/database";

let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
});

afterAll(async () => {
  await groups?.close();
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

beforeEach(async () => {
  await groups?.close();
  await database.sql.unsafe("truncate grouped_rows, deferred_rows");
});

let invocation = 0;

function transaction(fn = "grouped-writer", attempt = 1): { tx: InvocationTransaction; id: string } {
  const id = `00000000-0000-4000-8000-${String(++invocation).padStart(12, "0")}`;
  const tx = createInvocationTransaction(
    pool,
    { functionName: fn, invocationId: id, attempt, statementTimeoutMs: 10_000 },
    groups,
  );
  return { tx, id };
}

async function insertAndCommit(tx: InvocationTransaction, id: string, n: number): Promise<void> {
  await insertAndCommitWith(tx, id, n);
}

async function insertAndCommitWith(
  tx: InvocationTransaction,
  id: string,
  n: number,
  final?: FinalStatement,
): Promise<void> {
  await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
  await tx.commit(final);
}

/** Teaches the scheduler that `fn` holds its savepoint about 60 ms: one job of it, run on a lane. */
async function teachSlow(fn: string): Promise<void> {
  const job = transaction(fn);
  await job.tx.db.execute(`insert into grouped_rows (id, n) values ('${job.id}', 0)`);
  await new Promise((resolve) => setTimeout(resolve, 60));
  await job.tx.commit();
}

/** Invocation id -> Postgres transaction id of the audited inserts by `ids`. */
async function auditedTransactions(ids: string[]): Promise<Map<string, string>> {
  const rows = await database.sql<{ invocation_id: string; txid: string }[]>`
    select invocation_id, txid::text from jetfn.audit_log
    where table_name = 'grouped_rows' and operation = 'INSERT' and invocation_id in ${database.sql(ids)}`;
  return new Map(rows.map((row) => [row.invocation_id, row.txid]));
}

// Tests about sharing give the scheduler a hold limit no job reaches: on a loaded machine a job
// can hold its savepoint past the default 20 ms, and the scheduler would then stop sharing.
describe("commit groups", () => {
  it("lets jobs waiting for a lane share one COMMIT, each audited under its own invocation", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const jobs = Array.from({ length: 12 }, (_, n) => ({ ...transaction(), n }));
    await Promise.all(jobs.map(({ tx, id, n }) => insertAndCommit(tx, id, n)));

    const [counted] = await database.sql`select count(*)::int as count from grouped_rows`;
    expect(counted?.count).toBe(12);
    const audited = await auditedTransactions(jobs.map((job) => job.id));
    expect([...audited.keys()].sort()).toEqual(jobs.map((job) => job.id).sort());
    // One lane, twelve jobs at once: they queued for it, so most shared a transaction.
    expect(new Set(audited.values()).size).toBeLessThan(6);
  });

  it("commits at once when nobody waits, so a lone job is not held back", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const { tx, id } = transaction();
    await insertAndCommit(tx, id, 1);
    // Visible to another connection as soon as commit() resolved.
    const [row] = await database.sql`select n from grouped_rows where id = ${id}`;
    expect(row?.n).toBe(1);
  });

  it("holds no lone job's locks for a job that joins and then waits on them (a quiet runtime commits at once)", async () => {
    // A job that joined the lone job's transaction and then waited for another transaction needing
    // that job's row lock (a call writing the same key, say) would hold the lock itself: the group
    // waits for the joiner, the joiner for the other transaction, that one for the lock.
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const first = transaction();
    await first.tx.db.execute(`insert into grouped_rows (id, n) values ('${first.id}', 1)`);
    const committed = first.tx.commit(finalRecord(first.id, 1));
    // The next job reaches for the database in the same turn, then waits on the first job's key.
    const next = transaction();
    await next.tx.db.execute("select 1");
    const started = performance.now();
    const other = database.sql`insert into grouped_rows (id, n) values (${first.id}, 2) on conflict do nothing`;
    const outcome = await Promise.race([
      other.then(() => "other transaction went through"),
      new Promise((resolve) => setTimeout(() => resolve("still waiting on the lock"), 3_000)),
    ]);
    expect(outcome).toBe("other transaction went through");
    expect(performance.now() - started).toBeLessThan(3_000);
    await committed;
    await next.tx.commit(finalRecord(next.id, 1));
    const [row] = await database.sql`select n from grouped_rows where id = ${first.id}`;
    expect(row?.n).toBe(1);
  });

  it("under load, lets a job that reaches for the database in the same turn join a lane nobody waited for", async () => {
    groups = createCommitGroups(pool, { lanes: 2, maxSharedHoldMs: 60_000 });
    // Three jobs at once on two lanes: one queues, so the runtime counts as under load.
    await Promise.all([transaction(), transaction(), transaction()].map(({ tx, id }, n) => insertAndCommit(tx, id, n)));
    const first = transaction();
    await first.tx.db.execute(`insert into grouped_rows (id, n) values ('${first.id}', 10)`);
    const committed = first.tx.commit(finalRecord(first.id, 1));
    // Nobody waited when the first job left its lane; this job asks for one in the same turn.
    const second = transaction();
    await insertAndCommitWith(second.tx, second.id, 11, finalRecord(second.id, 1));
    await committed;
    const audited = await auditedTransactions([first.id, second.id]);
    expect(audited.size).toBe(2);
    expect(audited.get(first.id)).toBe(audited.get(second.id));
  });

  it("undoes only the failed job's writes; the rest of its group commits", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const jobs = Array.from({ length: 6 }, (_, n) => ({ ...transaction(), n }));
    const outcomes = await Promise.allSettled(
      jobs.map(async ({ tx, id, n }) => {
        await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
        if (n === 2) {
          await tx.rollback();
          throw new Error("handler failed");
        }
        await tx.commit();
      }),
    );
    expect(outcomes.map((outcome) => outcome.status)).toEqual([
      "fulfilled",
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    const rows = await database.sql`select id from grouped_rows order by n`;
    expect(rows.map((row) => row.id)).toEqual(jobs.filter((job) => job.n !== 2).map((job) => job.id));
    const audited = await auditedTransactions(jobs.map((job) => job.id));
    expect(audited.size).toBe(5);
    expect(audited.has(jobs[2]?.id as string)).toBe(false);
  });

  it("refuses a job whose handler swallowed a failed statement, without harming its group", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const good = Array.from({ length: 3 }, (_, n) => ({ ...transaction(), n }));
    const bad = transaction();
    const swallowing = (async () => {
      await bad.tx.db.execute(`insert into grouped_rows (id, n) values ('${bad.id}', 100)`);
      await bad.tx.db.execute("select 1 / 0").catch(() => undefined);
      await bad.tx.commit();
    })();
    const results = await Promise.allSettled([swallowing, ...good.map(({ tx, id, n }) => insertAndCommit(tx, id, n))]);
    expect(results[0]).toMatchObject({ status: "rejected", reason: { code: "E_HANDLER_FAILED" } });
    expect(results.slice(1).every((result) => result.status === "fulfilled")).toBe(true);
    const rows = await database.sql`select id from grouped_rows`;
    expect(rows.map((row) => row.id).sort()).toEqual(good.map((job) => job.id).sort());
  });

  it("fails a later attempt whose final statement fails (as the fence does), and commits the others", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const jobs = Array.from({ length: 4 }, (_, n) => ({ ...transaction("grouped-writer", n === 1 ? 2 : 1), n }));
    const results = await Promise.allSettled(
      jobs.map(({ tx, id, n }) =>
        settle(tx, async () => {
          await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
          const final =
            n === 1
              ? { text: "select jetfn_no_such_function($1)", params: [id] }
              : { text: "select $1::text", params: [id] };
          await tx.commit(final);
        }),
      ),
    );
    expect(results.map((result) => result.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
    expect(results[1]).toMatchObject({ reason: { code: "42883" } });
    const [counted] = await database.sql`select count(*)::int as count from grouped_rows`;
    expect(counted?.count).toBe(3);
  });

  it("lets a later attempt fenced by its own group's uncommitted record hear so only once that group commits", async () => {
    // The same job twice in one transaction: attempt 1 records it, attempt 2's fence refuses. If the
    // COMMIT then fails, attempt 1's record is gone: attempt 2 must not be told it lost (its message
    // would be acked and the job lost), but to run again alone like the rest of the group.
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const first = transaction("grouped-writer", 1);
    const second = { id: first.id, tx: transaction("grouped-writer", 2).tx };
    const breaker = transaction();
    const results = await Promise.allSettled([
      settle(first.tx, async () => {
        await first.tx.db.execute(`insert into deferred_rows (id, twin) values ('a', 'same')`);
        await first.tx.commit(finalRecord(first.id, 1));
      }),
      settle(second.tx, async () => {
        await second.tx.db.execute(`insert into deferred_rows (id, twin) values ('b', 'b')`);
        await second.tx.commit(finalRecord(first.id, 2));
      }),
      // Claims the same twin as the first: the unique check, deferred to the end of its part, dooms
      // the shared transaction.
      settle(breaker.tx, async () => {
        await breaker.tx.db.execute(`insert into deferred_rows (id, twin) values ('c', 'same')`);
        await breaker.tx.commit();
      }),
    ]);
    expect(results.map((result) => result.status)).toEqual(["rejected", "rejected", "rejected"]);
    for (const result of results) {
      expect(isSharedCommitFailure((result as PromiseRejectedResult).reason)).toBe(true);
    }
    const [recorded] = await database.sql`select count(*)::int as count from jetfn.invocations where id = ${first.id}`;
    expect(recorded?.count).toBe(0);
  });

  it("rolls back a group holding two attempts of one job, and says to run each alone", async () => {
    // The first attempt's record is written with the group's, just before its COMMIT, so the later
    // attempt's own (awaited) record goes first; the group's then finds the job finished and refuses.
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const first = transaction("grouped-writer", 1);
    const second = transaction("grouped-writer", 2);
    const results = await Promise.allSettled([
      settle(first.tx, () => insertAndCommitWith(first.tx, first.id, 1, finalRecord(first.id, 1))),
      settle(second.tx, () => insertAndCommitWith(second.tx, second.id, 2, finalRecord(first.id, 2))),
    ]);
    expect(results.map((result) => result.status)).toEqual(["rejected", "rejected"]);
    for (const result of results) {
      const reason = (result as PromiseRejectedResult).reason;
      expect(isSharedCommitFailure(reason)).toBe(true);
      expect((reason as { cause?: { code?: string } }).cause?.code).toBe(FENCED_OUT_CODE);
    }
    const rows = await database.sql`select n from grouped_rows order by n`;
    expect(rows).toEqual([]);
    // Alone, the fence settles it: the first attempt wins, the later one hears it lost.
    const again = transaction("grouped-writer", 1);
    await settle(again.tx, () => insertAndCommitWith(again.tx, again.id, 1, finalRecord(first.id, 1)));
    const later = transaction("grouped-writer", 2);
    await expect(
      settle(later.tx, () => insertAndCommitWith(later.tx, later.id, 2, finalRecord(first.id, 2))),
    ).rejects.toMatchObject({ code: FENCED_OUT_CODE });
    expect((await database.sql`select n from grouped_rows order by n`).map((row) => row.n)).toEqual([1]);
  });

  it("rolls back a group holding two first attempts of one job (a duplicate message), and says to run each alone", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const first = transaction("grouped-writer", 1);
    const copy = transaction("grouped-writer", 1);
    const bystander = transaction("grouped-writer", 1);
    const results = await Promise.allSettled([
      settle(first.tx, () => insertAndCommitWith(first.tx, first.id, 1, finalRecord(first.id, 1))),
      settle(copy.tx, () => insertAndCommitWith(copy.tx, copy.id, 2, finalRecord(first.id, 1))),
      settle(bystander.tx, () => insertAndCommitWith(bystander.tx, bystander.id, 3, finalRecord(bystander.id, 1))),
    ]);
    expect(results.map((result) => result.status)).toEqual(["rejected", "rejected", "rejected"]);
    for (const result of results) expect(isSharedCommitFailure((result as PromiseRejectedResult).reason)).toBe(true);
    expect(await database.sql`select n from grouped_rows`).toEqual([]);
    expect(await database.sql`select id from jetfn.invocations where id in (${first.id}, ${bystander.id})`).toEqual([]);
  });

  it("rolls back a group whose first attempt's final statement fails unawaited, and says to run each alone", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const jobs = Array.from({ length: 4 }, (_, n) => ({ ...transaction(), n }));
    const results = await Promise.allSettled(
      jobs.map(({ tx, id, n }) =>
        settle(tx, async () => {
          await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
          const final =
            n === 1
              ? { text: "select jetfn_no_such_function($1)", params: [id], inlinable: true }
              : { text: "select $1::text", params: [id], inlinable: true };
          await tx.commit(final);
        }),
      ),
    );
    // Whoever shared the doomed transaction is told to run again alone; nothing of theirs is kept.
    const failed = results.flatMap((result, index) => (result.status === "rejected" ? [index] : []));
    expect(failed).toContain(1);
    for (const index of failed) {
      expect(isSharedCommitFailure((results[index] as PromiseRejectedResult).reason)).toBe(true);
    }
    const rows = await database.sql`select n from grouped_rows order by n`;
    expect(rows.map((row) => row.n)).toEqual([0, 1, 2, 3].filter((n) => !failed.includes(n)));
  });

  it("fails every member when the shared COMMIT fails, marked so each can run again alone", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const jobs = Array.from({ length: 5 }, (_, n) => ({ ...transaction(), n }));
    const results = await Promise.allSettled(
      jobs.map(({ tx, id, n }) =>
        settle(tx, async () => {
          // Two members claim the same twin: the unique check, deferred to the end of the second
          // claimant's part, dooms the shared transaction.
          await tx.db.execute(
            `insert into deferred_rows (id, twin) values ('${id}', '${n === 1 || n === 3 ? "same" : id}')`,
          );
          await tx.commit();
        }),
      ),
    );
    const rejected = results.filter((result) => result.status === "rejected");
    // Every job that was in the failed group is told so (it may have been one group or more).
    expect(rejected.length).toBeGreaterThanOrEqual(2);
    for (const result of rejected) expect(isSharedCommitFailure((result as PromiseRejectedResult).reason)).toBe(true);
    // Alone, each of them commits except the second claimant of the twin.
    const retried = await Promise.allSettled(
      jobs
        .filter((_, index) => results[index]?.status === "rejected")
        .map(async ({ id, n }) => {
          const alone = createInvocationTransaction(pool, {
            functionName: "grouped-writer",
            invocationId: id,
            attempt: 1,
            statementTimeoutMs: 10_000,
          });
          await alone.db.execute(
            `insert into deferred_rows (id, twin) values ('${id}', '${n === 1 || n === 3 ? "same" : id}')`,
          );
          await alone.commit();
        }),
    );
    const [counted] = await database.sql`select count(*)::int as count from deferred_rows`;
    expect(counted?.count).toBe(4);
    expect(retried.filter((result) => result.status === "rejected")).toHaveLength(1);
  });

  it("fails the members of a transaction whose connection was killed between jobs, and never shares a lane", async () => {
    // The test holds the lane for a while; it must still pass to the next job, not commit first.
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    const first = transaction();
    await first.tx.db.execute(`insert into grouped_rows (id, n) values ('${first.id}', 1)`);
    const [holder] = (await first.tx.db.execute("select pg_backend_pid() as pid")) as unknown as { pid: number }[];
    // Killed after the job's last statement: nothing the job still sends would notice.
    await database.sql`select pg_terminate_backend(${holder?.pid as number})`;
    await new Promise((resolve) => setTimeout(resolve, 300));
    // The next job waits for the lane, so the first one's COMMIT waits for it.
    const second = transaction();
    const secondDone = insertAndCommit(second.tx, second.id, 2);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const firstDone = first.tx.commit();

    const [firstOutcome, secondOutcome] = await Promise.allSettled([firstDone, secondDone]);
    // Its writes died with the session: it must hear so (and run again alone), not that it committed.
    expect(firstOutcome.status).toBe("rejected");
    expect(isSharedCommitFailure((firstOutcome as PromiseRejectedResult).reason)).toBe(true);
    expect(secondOutcome.status).toBe("fulfilled");
    const rows = await database.sql`select id from grouped_rows order by n`;
    expect(rows.map((row) => row.id)).toEqual([second.id]);
  });

  it("starts a new transaction instead of grouping a function known to hold its savepoint long", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 20 });
    await teachSlow("slow-writer");

    const quick = Array.from({ length: 4 }, (_, n) => ({ ...transaction(), n: n + 1 }));
    const slow = transaction("slow-writer");
    await Promise.all([
      ...quick.map(({ tx, id, n }) => insertAndCommit(tx, id, n)),
      (async () => {
        await slow.tx.db.execute(`insert into grouped_rows (id, n) values ('${slow.id}', 9)`);
        await new Promise((resolve) => setTimeout(resolve, 60));
        await slow.tx.commit();
      })(),
    ]);
    const audited = await auditedTransactions([slow.id, ...quick.map((job) => job.id)]);
    const slowTransaction = audited.get(slow.id);
    for (const job of quick) expect(audited.get(job.id)).not.toBe(slowTransaction);
  });

  it("gives no lane to a function known to hold its savepoint long, so quick jobs keep theirs", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 20 });
    await teachSlow("slow-writer");
    expect(groups.takes("slow-writer")).toBe(false);
    expect(groups.takes("grouped-writer")).toBe(true);

    // Three slow jobs hold transactions of their own for 300 ms; with the one lane taken by any of
    // them, the quick jobs would wait for it.
    const finished: string[] = [];
    const slow = Array.from({ length: 3 }, () => transaction("slow-writer"));
    const quick = Array.from({ length: 4 }, (_, n) => ({ ...transaction(), n: n + 1 }));
    await Promise.all([
      ...slow.map(async ({ tx, id }) => {
        await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', 9)`);
        await new Promise((resolve) => setTimeout(resolve, 300));
        await tx.commit();
        finished.push("slow");
      }),
      (async () => {
        // Started once the slow ones hold their transactions.
        await new Promise((resolve) => setTimeout(resolve, 50));
        await Promise.all(quick.map(({ tx, id, n }) => insertAndCommit(tx, id, n)));
        finished.push("quick");
      })(),
    ]);
    expect(finished).toEqual(["quick", "slow", "slow", "slow"]);
    const audited = await auditedTransactions([...slow.map((job) => job.id), ...quick.map((job) => job.id)]);
    const slowTransactions = new Set(slow.map((job) => audited.get(job.id)));
    expect(slowTransactions.size).toBe(3);
    for (const job of quick) expect(slowTransactions.has(audited.get(job.id))).toBe(false);
  });

  it("returns a function to the lanes once its jobs turn quick", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 20 });
    groups.held("turning-writer", 500);
    expect(groups.takes("turning-writer")).toBe(false);
    // Its jobs, off the lanes, now end at once: the running average comes down.
    for (let n = 0; n < 30 && !groups.takes("turning-writer"); n++) {
      const job = transaction("turning-writer");
      await insertAndCommit(job.tx, job.id, 100 + n);
    }
    expect(groups.takes("turning-writer")).toBe(true);
  });

  it("starts every job from the session's settings, whatever earlier jobs of its transaction SET LOCAL", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
    await database.sql.unsafe(
      "do $$ begin create role jetfn_group_reader; exception when duplicate_object then null; end $$",
    );
    const jobs = Array.from({ length: 6 }, (_, n) => ({ ...transaction(), n }));
    const seen = await Promise.all(
      jobs.map(async ({ tx, id, n }) => {
        await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
        const [row] = (await tx.db.execute(
          "select current_setting('search_path') as path, coalesce(current_setting('app.tenant', true), '') as tenant, current_user as who",
        )) as unknown as { path: string; tenant: string; who: string }[];
        await tx.db.execute(`set local search_path = pg_temp, tenant_${n}`);
        await tx.db.execute(`select set_config('app.tenant', 'tenant-${n}', true)`);
        await tx.db.execute("set local role jetfn_group_reader");
        await tx.commit();
        return row;
      }),
    );
    const audited = await auditedTransactions(jobs.map((job) => job.id));
    expect(new Set(audited.values()).size).toBeLessThan(jobs.length); // they did share transactions
    for (const row of seen) expect(row).toEqual({ path: '"$user", public', tenant: "", who: "postgres" });
  });

  it("never puts more jobs in one transaction than maxMembers", async () => {
    groups = createCommitGroups(pool, { lanes: 1, maxMembers: 3, maxSharedHoldMs: 60_000 });
    const jobs = Array.from({ length: 10 }, (_, n) => ({ ...transaction(), n }));
    await Promise.all(jobs.map(({ tx, id, n }) => insertAndCommit(tx, id, n)));
    const perTransaction = new Map<string, number>();
    for (const txid of (await auditedTransactions(jobs.map((job) => job.id))).values()) {
      perTransaction.set(txid, (perTransaction.get(txid) ?? 0) + 1);
    }
    expect(Math.max(...perTransaction.values())).toBeLessThanOrEqual(3);
    expect([...perTransaction.values()].reduce((a, b) => a + b, 0)).toBe(10);
  });
});
