import type { Sql } from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { createInvocationTransaction, type InvocationTransaction } from "../../runtime/db/invocation-transaction";
import { isSharedCommitFailure } from "../../runtime/db/shared-commit-error";
import { createGroupedDatabase, settle } from "../helpers/commit-groups";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";

// Deferred constraints (constraint triggers and keys declared DEFERRABLE INITIALLY DEFERRED) fire
// when their transaction commits. Before, that was after the audit check, and in a shared
// transaction under the last job's stamp: a deferred trigger's audit rows were never checked, an
// honest one's were audited as the group's last job, and one that changed the stamp committed
// rows in another job's name. Constraint modes a job set (SET CONSTRAINTS) also stayed in force
// for the jobs after it. Now each job's deferred constraints fire at the end of its own part,
// under its stamp and before the check, and the next part starts from the declared modes.

let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups | undefined;
let invocation = 0;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
  await database.sql.unsafe(`
    create table deferred_sources (id text primary key);
    create table deferred_effects (id bigserial primary key, source text not null);
    create function note_deferred_source() returns trigger language plpgsql as $$
      begin insert into deferred_effects (source) values (new.id); return null; end $$;
    create constraint trigger note_source after insert on deferred_sources
      deferrable initially deferred for each row execute function note_deferred_source();

    -- Database code a handler may reach: it stamps its row as the invocation the row names.
    create table forged_sources (id text primary key, victim text not null);
    create function forge_deferred_source() returns trigger language plpgsql as $$
      begin
        perform set_config('jetfn.invocation_id', new.victim, true);
        insert into deferred_effects (source) values (new.id);
        return null;
      end $$;
    create constraint trigger forge_source after insert on forged_sources
      deferrable initially deferred for each row execute function forge_deferred_source();

    create table mode_parents (id integer primary key);
    create table mode_children (id text primary key,
      parent integer references mode_parents deferrable initially deferred);
    create table mode_strict (id text primary key,
      parent integer constraint mode_strict_parent references mode_parents deferrable initially immediate);
  `);
});

afterEach(async () => {
  await groups?.close();
  groups = undefined;
  await database.sql.unsafe(
    "truncate grouped_rows, deferred_rows, deferred_sources, deferred_effects, forged_sources, mode_children, mode_strict, mode_parents",
  );
});

afterAll(async () => {
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

/** A job's transaction: on the commit groups while the test shares them, else of its own. */
function job(
  attempt = 1,
  id = `00000000-0000-4000-8000-${String(++invocation).padStart(12, "0")}`,
): {
  id: string;
  tx: InvocationTransaction;
} {
  const stamp = { functionName: "grouped-writer", invocationId: id, attempt, statementTimeoutMs: 10_000 };
  return { id, tx: createInvocationTransaction(pool, stamp, groups) };
}

function sharing(): CommitGroups {
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
  return groups;
}

/** The audit rows of deferred_effects: whose invocation each names, for which source row, in which transaction. */
async function effects(): Promise<{ invocation: string | null; source: string; txid: string }[]> {
  return database.sql<{ invocation: string | null; source: string; txid: string }[]>`
    select invocation_id as invocation, new_row ->> 'source' as source, txid::text from jetfn.audit_log
    where table_name = 'deferred_effects' and operation = 'INSERT' order by id`;
}

async function auditedEffectsOf(ids: string[]): Promise<{ invocation: string | null; source: string; txid: string }[]> {
  return (await effects()).filter((row) => ids.includes(row.source));
}

describe("deferred constraint triggers", () => {
  it("audits what a deferred trigger writes under the job whose statement queued it, in a shared transaction", async () => {
    sharing();
    const jobs = Array.from({ length: 4 }, () => job());
    // The first job holds the lane while the others wait for it: all four share one transaction.
    await jobs[0]?.tx.db.execute("select 1");
    await Promise.all(
      jobs.map(async ({ id, tx }) => {
        await tx.db.execute(`insert into deferred_sources (id) values ('${id}')`);
        await tx.commit();
      }),
    );
    const audited = await auditedEffectsOf(jobs.map((j) => j.id));
    expect(audited.map((row) => row.source)).toEqual(jobs.map((j) => j.id));
    expect(audited.map((row) => row.invocation)).toEqual(jobs.map((j) => j.id));
    expect(new Set(audited.map((row) => row.txid)).size).toBe(1);
  });

  it("audits it under the job in a transaction of its own", async () => {
    const alone = job();
    await alone.tx.db.execute(`insert into deferred_sources (id) values ('${alone.id}')`);
    await alone.tx.commit();
    expect(await auditedEffectsOf([alone.id])).toMatchObject([{ invocation: alone.id, source: alone.id }]);
  });

  it("refuses a job alone whose deferred trigger stamps its rows as another invocation", async () => {
    const victim = job();
    const forger = job();
    await forger.tx.db.execute(`insert into forged_sources (id, victim) values ('${forger.id}', '${victim.id}')`);
    await expect(settle(forger.tx, () => forger.tx.commit())).rejects.toMatchObject({ code: "E_STATEMENT_REFUSED" });
    expect(await database.sql`select id from forged_sources`).toEqual([]);
    expect(await auditedEffectsOf([forger.id])).toEqual([]);
  });

  it.each([
    ["after its victim", "victim first"],
    ["before its victim", "forger first"],
  ])(
    "refuses a group holding a job whose deferred trigger forges the stamp (forger %s); alone, only the forger fails",
    async (_, order) => {
      sharing();
      const victim = job();
      const forger = job();
      const [first, second] = order === "victim first" ? [victim, forger] : [forger, victim];
      const run = async ({ id, tx }: typeof victim): Promise<void> => {
        if (id === forger.id) {
          await tx.db.execute(`insert into forged_sources (id, victim) values ('${id}', '${victim.id}')`);
        } else await tx.db.execute(`insert into deferred_sources (id) values ('${id}')`);
        await tx.commit();
      };
      await first.tx.db.execute("select 1");
      const settled = await Promise.allSettled([
        settle(first.tx, () => run(first)),
        settle(second.tx, () => run(second)),
      ]);
      expect(settled.map((outcome) => outcome.status)).toEqual(["rejected", "rejected"]);
      for (const outcome of settled) {
        expect(isSharedCommitFailure((outcome as PromiseRejectedResult).reason)).toBe(true);
      }
      expect(await auditedEffectsOf([victim.id, forger.id])).toEqual([]);
      // Each runs again alone, as the job runner does after a SharedCommitError.
      await groups?.close();
      groups = undefined;
      const victimAgain = job(1, victim.id);
      await settle(victimAgain.tx, async () => {
        await victimAgain.tx.db.execute(`insert into deferred_sources (id) values ('${victim.id}')`);
        await victimAgain.tx.commit();
      });
      expect(await auditedEffectsOf([victim.id])).toMatchObject([{ invocation: victim.id }]);
      const forgerAgain = job(1, forger.id);
      await expect(
        settle(forgerAgain.tx, async () => {
          await forgerAgain.tx.db.execute(
            `insert into forged_sources (id, victim) values ('${forger.id}', '${victim.id}')`,
          );
          await forgerAgain.tx.commit();
        }),
      ).rejects.toMatchObject({ code: "E_STATEMENT_REFUSED" });
      expect(await database.sql`select id from forged_sources`).toEqual([]);
    },
  );
});

describe("constraint modes in a shared transaction", () => {
  it("gives a job its deferred keys even when the job before it set every constraint IMMEDIATE", async () => {
    sharing();
    const first = job();
    const second = job();
    await first.tx.db.execute("set constraints all immediate");
    const results = await Promise.allSettled([
      settle(first.tx, async () => {
        await first.tx.db.execute("insert into mode_parents (id) values (1)");
        await first.tx.db.execute(`insert into mode_children (id, parent) values ('${first.id}', 1)`);
        await first.tx.commit();
      }),
      settle(second.tx, async () => {
        // A child before its parent: fine while the key is deferred, as it is declared.
        await second.tx.db.execute(`insert into mode_children (id, parent) values ('${second.id}', 2)`);
        await second.tx.db.execute("insert into mode_parents (id) values (2)");
        await second.tx.commit();
      }),
    ]);
    expect(results.map((result) => result.status)).toEqual(["fulfilled", "fulfilled"]);
    const rows = await database.sql`select id from mode_children order by id`;
    expect(rows.map((row) => row.id)).toEqual([first.id, second.id].sort());
  });

  it("checks a job's immediate key at its statement even when the job before it deferred every constraint", async () => {
    sharing();
    const first = job();
    const second = job();
    await first.tx.db.execute("set constraints all deferred");
    let statementError: unknown;
    const results = await Promise.allSettled([
      settle(first.tx, async () => {
        await first.tx.db.execute("insert into mode_parents (id) values (1)");
        await first.tx.commit();
      }),
      settle(second.tx, async () => {
        // No parent 7: alone, the statement itself fails (the key is checked at once).
        await second.tx.db
          .execute(`insert into mode_strict (id, parent) values ('${second.id}', 7)`)
          .catch((error: unknown) => {
            statementError = error;
            throw error;
          });
        await second.tx.commit();
      }),
    ]);
    expect(results[0]?.status).toBe("fulfilled");
    expect(statementError).toMatchObject({ cause: { code: "23503" } });
    expect(isSharedCommitFailure((results[1] as PromiseRejectedResult).reason)).toBe(false);
    expect((await database.sql`select id from mode_parents`).map((row) => row.id)).toEqual([1]);
  });

  it("fails alone a later attempt whose deferred key is violated, and commits the rest of its group", async () => {
    sharing();
    const first = job();
    const later = job(2);
    const third = job();
    await first.tx.db.execute("select 1");
    const results = await Promise.allSettled([
      settle(first.tx, async () => {
        await first.tx.db.execute(`insert into deferred_rows (id, twin) values ('${first.id}', 'same')`);
        await first.tx.commit();
      }),
      // A later attempt waits for the end of its part: the unique check deferred to it is its own failure.
      settle(later.tx, async () => {
        await later.tx.db.execute(`insert into deferred_rows (id, twin) values ('${later.id}', 'same')`);
        await later.tx.commit();
      }),
      settle(third.tx, async () => {
        await third.tx.db.execute(`insert into deferred_rows (id, twin) values ('${third.id}', 'other')`);
        await third.tx.commit();
      }),
    ]);
    expect(results.map((result) => result.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(results[1]).toMatchObject({ reason: { code: "23505" } });
    const rows = await database.sql`select id from deferred_rows order by id`;
    expect(rows.map((row) => row.id)).toEqual([first.id, third.id].sort());
  });
});

describe("constraint modes after a migration", () => {
  /** Two jobs, the second waiting for the first's lane: whether they shared a transaction, and how the second's insert failed. */
  async function pair(parent: number): Promise<{ shared: boolean; statementError: unknown }> {
    const first = job();
    const second = job();
    const txids: unknown[] = [];
    let statementError: unknown;
    await first.tx.db.execute("set constraints all deferred");
    await Promise.allSettled([
      settle(first.tx, async () => {
        txids.push((await first.tx.db.execute("select txid_current()::text as txid"))[0]?.txid);
        await first.tx.db.execute(`insert into mode_parents (id) values (${parent})`);
        await first.tx.commit();
      }),
      settle(second.tx, async () => {
        txids.push((await second.tx.db.execute("select txid_current()::text as txid"))[0]?.txid);
        await second.tx.db
          .execute(`insert into mode_late (id, parent) values ('${second.id}', -1)`)
          .catch((error: unknown) => {
            statementError = error;
            throw error;
          });
        await second.tx.commit();
      }),
    ]);
    return { shared: txids[0] === txids[1], statementError };
  }

  it("starts a later part from the modes a migration declared more than a second before", async () => {
    sharing();
    // Read as they were: the key below does not exist yet.
    await pair(100);
    await database.sql.unsafe(`create table mode_late (id text primary key,
      parent integer constraint mode_late_parent references mode_parents deferrable initially immediate)`);
    try {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      // Modes read before the migration are no longer used; the next read names the new key.
      let parent = 100;
      const shared = await eventually(async () => {
        const outcome = await pair(++parent);
        return outcome.shared ? outcome : undefined;
      });
      // Declared IMMEDIATE: checked at the statement, though the job before it deferred every constraint.
      expect(shared.statementError).toMatchObject({ cause: { code: "23503" } });
    } finally {
      await database.sql.unsafe("drop table mode_late");
    }
  });
});

describe("jetfn.constraint_modes", () => {
  it("names what puts each deferrable constraint back to its declared mode after SET CONSTRAINTS ALL IMMEDIATE", async () => {
    const fresh = await createTestDatabase();
    const modes = async (): Promise<string> => {
      const [row] = await fresh.sql<{ modes: string }[]>`select jetfn.constraint_modes() as modes`;
      return row?.modes as string;
    };
    await fresh.sql.unsafe("create table p (id integer primary key)");
    await fresh.sql.unsafe("create table c1 (id integer primary key, p integer references p deferrable)");
    expect(await modes()).toBe("");
    await fresh.sql.unsafe(
      "create table c2 (id integer primary key, p integer constraint c2_p references p deferrable initially deferred)",
    );
    expect(await modes()).toBe("set constraints all deferred; set constraints public.c1_p_fkey immediate");
    await fresh.sql.unsafe("drop table c1");
    expect(await modes()).toBe("set constraints all deferred");
  });

  it("returns null while a constraint declared INITIALLY DEFERRED shares its name with one declared INITIALLY IMMEDIATE", async () => {
    // SET CONSTRAINTS s.name sets every constraint of that name in s: no statement gives both their modes.
    const fresh = await createTestDatabase();
    const read = async (): Promise<{ modes: string | null; clashes: string[] | null }> => {
      const [row] = await fresh.sql<{ modes: string | null; clashes: string[] | null }[]>`
        select jetfn.constraint_modes() as modes, jetfn.constraint_mode_clashes() as clashes`;
      return { modes: row?.modes ?? null, clashes: row?.clashes ?? null };
    };
    await fresh.sql.unsafe(`create schema "Odd Schema"; create table p (id integer primary key);
      create table "Odd Schema".c1 (p integer constraint "Shared Name" references p deferrable initially deferred);
      create table "Odd Schema".c2 (p integer constraint "Shared Name" references p deferrable)`);
    expect(await read()).toEqual({ modes: null, clashes: ['"Odd Schema"."Shared Name"'] });
    // The same name in another schema is another constraint to SET CONSTRAINTS.
    await fresh.sql.unsafe(`drop table "Odd Schema".c2;
      create table c2 (p integer constraint "Shared Name" references p deferrable)`);
    expect(await read()).toEqual({
      modes: 'set constraints all deferred; set constraints public."Shared Name" immediate',
      clashes: null,
    });
    // Both deferred, or a non-deferrable one beside a deferred one (SET CONSTRAINTS ... IMMEDIATE skips it): no clash.
    await fresh.sql.unsafe(`create table "Odd Schema".c3 (p integer constraint "Shared Name" references p deferrable initially deferred);
      create table "Odd Schema".c4 (p integer constraint "Shared Name" references p)`);
    expect(await read()).toMatchObject({ clashes: null });
    await fresh.sql.unsafe(
      `create table c5 (p integer constraint "Shared Name" references p deferrable initially deferred)`,
    );
    expect(await read()).toEqual({ modes: null, clashes: ['public."Shared Name"'] });
  });
});
