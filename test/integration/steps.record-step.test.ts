import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// jetfn.record_step (migration 0032), the memo's statement: it makes the job's record if there is
// none, and is fenced like a job's record (JF001 once the invocation ended, JF002 for another
// function's id) and by the step's key (JF004: another run recorded the step first).
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

const recordStep = (id: string, fn: string, key: string, result: unknown, attempt = 1) =>
  database.sql`select jetfn.record_step(${id}, ${fn}, ${attempt}, '{"n": 1}'::jsonb, now(), now(), 7, null,
    null, null, null, ${key}, ${database.sql.json(result as never)}, now()) as seq`;

const complete = (id: string, fn: string) =>
  database.sql`select jetfn.complete_invocation(${id}, ${fn}, 1, '{}'::jsonb, '{}'::jsonb, now(), now(), 1, null)`;

const recordOf = async (id: string) =>
  (await database.sql`select function, status, attempts, input, stream_seq from jetfn.invocations where id = ${id}`)[0];

const stepsOf = async (id: string) =>
  database.sql`select key, seq, kind, status, attempts, result, txid is not null as has_txid
    from jetfn.steps where invocation_id = ${id} order by seq`;

it("makes the job's record running with the first step, and numbers steps in the order recorded", async () => {
  expect(await recordStep("steps-0001", "orders.fulfil", "reserve", { left: 3 })).toEqual([{ seq: 1 }]);
  expect(await recordOf("steps-0001")).toEqual({
    function: "orders.fulfil",
    status: "running",
    attempts: 1,
    input: { n: 1 },
    stream_seq: "7",
  });
  expect(await recordStep("steps-0001", "orders.fulfil", "charge", "ch_1", 2)).toEqual([{ seq: 2 }]);
  expect(await recordOf("steps-0001")).toMatchObject({ status: "running", attempts: 2 });
  expect(await stepsOf("steps-0001")).toEqual([
    { key: "reserve", seq: 1, kind: "step", status: "succeeded", attempts: 1, result: { left: 3 }, has_txid: true },
    // A step counts its own attempts (0036), whatever the job's attempt that ran it.
    { key: "charge", seq: 2, kind: "step", status: "succeeded", attempts: 1, result: "ch_1", has_txid: true },
  ]);
  // The job's own record then ends it as usual.
  await complete("steps-0001", "orders.fulfil");
  expect(await recordOf("steps-0001")).toMatchObject({ status: "succeeded" });
});

it("leaves a record its attempt's failure wrote as it is, when that attempt's step commits late", async () => {
  await database.sql`insert into jetfn.invocations (id, function, status, attempts, started_at)
    values ('steps-late', 'orders.fulfil', 'failed', 2, '2026-01-01T00:00:00Z')`;
  await recordStep("steps-late", "orders.fulfil", "reserve", 1, 2);
  expect(await recordOf("steps-late")).toMatchObject({ status: "failed", attempts: 2 });
  // The next attempt's step makes it running again; a late step of an earlier one leaves it so.
  await recordStep("steps-late", "orders.fulfil", "charge", 1, 3);
  expect(await recordOf("steps-late")).toMatchObject({ status: "running", attempts: 3 });
  const [before] = await database.sql`select started_at from jetfn.invocations where id = 'steps-late'`;
  await database.sql`select jetfn.record_step('steps-late', 'orders.fulfil', 2, '{}'::jsonb, now(), '2020-01-01T00:00:00Z',
    7, null, null, null, null, 'late', '1'::jsonb, now())`;
  expect(
    await database.sql`select status, attempts, started_at from jetfn.invocations where id = 'steps-late'`,
  ).toEqual([{ status: "running", attempts: 3, started_at: before?.started_at }]);
});

it("refuses a step recorded twice with JF004 and keeps the first memo", async () => {
  await recordStep("steps-0002", "orders.fulfil", "reserve", { by: "first run" });
  await expect(recordStep("steps-0002", "orders.fulfil", "reserve", { by: "second run" })).rejects.toMatchObject({
    code: "JF004",
  });
  expect(await stepsOf("steps-0002")).toMatchObject([{ key: "reserve", result: { by: "first run" } }]);
});

it("writes nothing once the invocation ended (JF001), nor for another function's id (JF002)", async () => {
  await complete("steps-0003", "orders.fulfil");
  await expect(recordStep("steps-0003", "orders.fulfil", "late", 1)).rejects.toMatchObject({ code: "JF001" });
  await database.sql`update jetfn.invocations set status = 'cancelled' where id = 'steps-0001'`;
  await expect(recordStep("steps-0001", "orders.fulfil", "after-cancel", 1)).rejects.toMatchObject({ code: "JF001" });
  await recordStep("steps-0004", "orders.fulfil", "reserve", 1);
  await expect(recordStep("steps-0004", "billing.charge", "reserve-2", 1)).rejects.toMatchObject({ code: "JF002" });
  expect(await stepsOf("steps-0003")).toEqual([]);
  expect((await stepsOf("steps-0001")).map((step) => step.key)).toEqual(["reserve", "charge"]);
  expect(await recordOf("steps-0004")).toMatchObject({ function: "orders.fulfil" });
  expect((await stepsOf("steps-0004")).map((step) => step.key)).toEqual(["reserve"]);
});

it("deletes an invocation's steps with its record", async () => {
  await database.sql`delete from jetfn.invocations where id = 'steps-0004'`;
  expect(await stepsOf("steps-0004")).toEqual([]);
});

it("lets two runs racing for one step commit one memo", async () => {
  // Each in its own transaction, as two runs of one job would: the second waits on the record's row
  // lock, then finds the key taken.
  const results = await Promise.allSettled(
    ["run-a", "run-b"].map((run) =>
      database.sql.begin(async (tx) => {
        await tx`select jetfn.record_step('steps-0005', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 1, null,
          null, null, null, 'reserve', ${tx.json({ run } as never)}, now())`;
        await tx`select pg_sleep(0.1)`;
      }),
    ),
  );
  expect(results.filter((result) => result.status === "fulfilled")).toHaveLength(1);
  const failed = results.find((result) => result.status === "rejected") as PromiseRejectedResult;
  expect(failed.reason).toMatchObject({ code: "JF004" });
  expect(await stepsOf("steps-0005")).toHaveLength(1);
});

// After a durable sleep (migration 0034) only the run of the record's token goes on: a step of any
// other run (a copy of the job's message that read its memos before the job slept, a stale
// resumption) is refused, whatever the record's status, and so is its end.
it("refuses the steps and the end of a run whose token is not the record's", async () => {
  await recordStep("steps-token", "orders.fulfil", "reserve", 1);
  await database.sql`update jetfn.invocations set resume = '2s1', status = 'running' where id = 'steps-token'`;
  const stepOf = (key: string, token: string | null) =>
    database.sql`select jetfn.record_step('steps-token', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7, null,
      null, null, null, ${key}, '1'::jsonb, now(), ${token}::text) as seq`;
  await expect(stepOf("charge", null)).rejects.toMatchObject({ code: "JF005" });
  await expect(stepOf("charge", "1s1")).rejects.toMatchObject({ code: "JF005" });
  // The form runtimes of the version before call is a run of the job's own message.
  await expect(recordStep("steps-token", "orders.fulfil", "charge", 1)).rejects.toMatchObject({ code: "JF005" });
  await expect(complete("steps-token", "orders.fulfil")).rejects.toMatchObject({ code: "JF001" });
  expect(await stepOf("charge", "2s1")).toEqual([{ seq: 2 }]);
  await database.sql`select jetfn.complete_invocation('steps-token', 'orders.fulfil', 1, '{}'::jsonb, '{}'::jsonb,
    now(), now(), 1, null, null, null, null, '2s1')`;
  expect(await recordOf("steps-token")).toMatchObject({ status: "succeeded" });
});

// A step's failed attempt (migration 0036) is recorded outside its rolled-back transaction: with a
// retry, the record waits `failed` for the resumption of the next token; without, the step is
// `failed` for good. Fenced as record_step is, and on the step's attempt.
const failStep = (id: string, key: string, stepAttempt: number, runToken: string | null, retry?: string) =>
  database.sql`select jetfn.record_step_failure(${id}, 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7, null,
    null, null, null, ${key}, ${stepAttempt}, ${database.sql.json({ attempt: stepAttempt, code: "E_HANDLER_FAILED", step: key } as never)},
    now(), ${runToken}::text, ${retry === undefined ? null : "2030-01-01T00:00:00Z"}::timestamptz, ${retry ?? null}::text)`;

it("records a step's failed attempts, then its success on a retry, and refuses stale or repeated ones", async () => {
  await recordStep("steps-retry", "orders.fulfil", "reserve", 1);
  await failStep("steps-retry", "charge", 1, null, "2r2");
  expect(
    await database.sql`select status, attempts, resume, resume_attempts, wake_at::text, error->>'step' as step
      from jetfn.invocations where id = 'steps-retry'`,
  ).toEqual([
    {
      status: "failed",
      attempts: 1,
      resume: "2r2",
      resume_attempts: 0,
      wake_at: "2030-01-01 00:00:00+00",
      step: "charge",
    },
  ]);
  // The run of the token before, and a second record of the same attempt, are refused.
  await expect(failStep("steps-retry", "charge", 1, null, "2r2")).rejects.toMatchObject({ code: "JF005" });
  await expect(failStep("steps-retry", "charge", 1, "2r2", "2r3")).rejects.toMatchObject({ code: "JF004" });
  await failStep("steps-retry", "charge", 2, "2r2", "2r3");
  const stepRow = async () =>
    (
      await database.sql`select seq, status, attempts, jsonb_array_length(errors) as errors, result
        from jetfn.steps where invocation_id = 'steps-retry' and key = 'charge'`
    )[0];
  expect(await stepRow()).toEqual({ seq: 2, status: "retrying", attempts: 2, errors: 2, result: null });
  // The third attempt commits: the row becomes the step's memo, counting its attempts.
  await database.sql`update jetfn.invocations set status = 'running' where id = 'steps-retry'`;
  await database.sql`select jetfn.record_step('steps-retry', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7, null,
    null, null, null, 'charge', '"ch_1"'::jsonb, now(), '2r3'::text)`;
  expect(await stepRow()).toEqual({ seq: 2, status: "succeeded", attempts: 3, errors: 2, result: "ch_1" });
  // A late failure of an attempt that lost, and a step recorded twice, change nothing.
  await expect(failStep("steps-retry", "charge", 3, "2r3")).rejects.toMatchObject({ code: "JF004" });
  await expect(
    database.sql`select jetfn.record_step('steps-retry', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7, null,
      null, null, null, 'charge', '"ch_2"'::jsonb, now(), '2r3'::text)`,
  ).rejects.toMatchObject({ code: "JF004" });
  // Without a retry the step fails for good and the run goes on: the record stays the run's.
  await failStep("steps-retry", "refund", 1, "2r3");
  expect(await recordOf("steps-retry")).toMatchObject({ status: "running" });
  expect(
    await database.sql`select status, attempts, finished_at is not null as finished from jetfn.steps
      where invocation_id = 'steps-retry' and key = 'refund'`,
  ).toEqual([{ status: "failed", attempts: 1, finished: true }]);
  await expect(failStep("steps-retry", "refund", 2, "2r3")).rejects.toMatchObject({ code: "JF004" });
  await expect(failStep("steps-retry", "sleep-after", 1, null)).rejects.toMatchObject({ code: "JF005" });
});

it("refuses a failure of a step already failed for good, or of an ended invocation, and a retry without its token", async () => {
  await failStep("steps-retry-2", "charge", 1, null);
  // A late success cannot overwrite a failure the handler may have compensated for.
  await expect(
    database.sql`select jetfn.record_step('steps-retry-2', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7, null,
      null, null, null, 'charge', '"ch_1"'::jsonb, now(), null::text)`,
  ).rejects.toMatchObject({ code: "JF004" });
  await expect(
    database.sql`select jetfn.record_step_failure('steps-retry-2', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7,
      null, null, null, null, 'other', 1, '{}'::jsonb, now(), null::text, now(), null::text)`,
  ).rejects.toMatchObject({ code: "22023" });
  await database.sql`update jetfn.invocations set status = 'cancelled' where id = 'steps-retry-2'`;
  await expect(failStep("steps-retry-2", "late", 1, null)).rejects.toMatchObject({ code: "JF001" });
});

it("counts the attempts a redelivered copy spent before a step's failure sets the next token", async () => {
  await recordStep("steps-retry-3", "orders.fulfil", "reserve", 1);
  // A copy of the run, delivered again, failed between steps as attempt 2; the first copy's step then fails.
  await database.sql`update jetfn.invocations set attempts = 2, status = 'failed' where id = 'steps-retry-3'`;
  await failStep("steps-retry-3", "charge", 1, null, "2r2");
  expect(
    await database.sql`select attempts, resume_attempts from jetfn.invocations where id = 'steps-retry-3'`,
  ).toEqual([{ attempts: 2, resume_attempts: 1 }]);
});

it("refuses to resume an invocation holding a failed step for a runtime of the version before 0036", async () => {
  await failStep("steps-retry-4", "charge", 1, null, "1r2");
  const resume = (form: "old" | "new") =>
    form === "old"
      ? database.sql`select outcome from jetfn.resume_invocation('steps-retry-4', 'orders.fulfil', '1r2', 1, null)`
      : database.sql`select outcome from jetfn.resume_invocation('steps-retry-4', 'orders.fulfil', '1r2', 1, null, true)`;
  // It would read the step as one that returned null: it is refused, the resumption left to a newer runtime.
  await expect(resume("old")).rejects.toMatchObject({ code: "JF006" });
  expect(await recordOf("steps-retry-4")).toMatchObject({ status: "failed" });
  expect(await resume("new")).toEqual([{ outcome: "run" }]);
  // Without failed steps, the old form resumes as it did.
  await recordStep("steps-retry-5", "orders.fulfil", "reserve", 1);
  await database.sql`update jetfn.invocations set resume = '2s1', status = 'sleeping', resume_attempts = 0
    where id = 'steps-retry-5'`;
  expect(
    await database.sql`select outcome from jetfn.resume_invocation('steps-retry-5', 'orders.fulfil', '2s1', 1, null)`,
  ).toEqual([{ outcome: "run" }]);
});

it("reopens a dead invocation with steps once, its failed steps to be tried again from their first attempt", async () => {
  await failStep("steps-reopen", "charge", 1, null);
  await database.sql`update jetfn.invocations set status = 'dead', finished_at = now() where id = 'steps-reopen'`;
  const reopen = (resume: string | null, token: string) =>
    database.sql`select jetfn.reopen_invocation('steps-reopen', ${resume}::text, ${token}) as function`;
  // Two retries at once read the same token: one reopens it.
  expect(await reopen(null, "1o1")).toEqual([{ function: "orders.fulfil" }]);
  await expect(reopen(null, "1o1")).rejects.toMatchObject({ code: "JF007" });
  expect(
    await database.sql`select status, attempts, resume, resume_attempts, finished_at from jetfn.invocations
      where id = 'steps-reopen'`,
  ).toEqual([{ status: "queued", attempts: 0, resume: "1o1", resume_attempts: 0, finished_at: null }]);
  expect(
    await database.sql`select status, attempts, jsonb_array_length(errors) as errors from jetfn.steps
      where invocation_id = 'steps-reopen'`,
  ).toEqual([{ status: "retrying", attempts: 0, errors: 1 }]);
  // Nor is a job without steps, or one not dead.
  await complete("steps-reopen-2", "orders.fulfil");
  await database.sql`update jetfn.invocations set status = 'dead' where id = 'steps-reopen-2'`;
  await expect(database.sql`select jetfn.reopen_invocation('steps-reopen-2', null::text, '1o1')`).rejects.toMatchObject(
    { code: "JF007" },
  );
});

// Durable waits (migration 0037): one statement records the wait, one resolves it with an event,
// one times it out; a match and a timeout race for the record's lock, and one wins.
const awaitEvent = (id: string, key: string, token: string, runToken: string | null = null) =>
  database.sql`select jetfn.await_event(${id}, 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 7, null, null, null, null,
    ${key}, 'shipment.dispatched', '{orderId}'::text[], '["o_1"]'::jsonb, now() + interval '1 hour', ${token},
    ${runToken}::text) as after_at`;
const resolveWait = (id: string, key: string, eventId: string, token: string, at = "now()") =>
  database.sql.unsafe(`select jetfn.resolve_wait($1, $2, $3, ${at}, '{"data": {}}'::jsonb, $4)`, [
    id,
    key,
    eventId,
    token,
  ]);

it("resolves a wait once, with an event stored after it may begin, that no other wait of the invocation took", async () => {
  await recordStep("steps-wait", "orders.fulfil", "reserve", 1);
  const [{ after_at: afterAt }] = (await awaitEvent("steps-wait", "shipment", "2t")) as unknown as [{ after_at: Date }];
  expect(await recordOf("steps-wait")).toMatchObject({ status: "awaiting" });
  // An event stored before the step before the wait ended (less a second) does not count.
  await expect(
    resolveWait("steps-wait", "shipment", "ev-old", "2m", "now() - interval '1 hour'"),
  ).rejects.toMatchObject({
    code: "JF004",
  });
  expect(afterAt.getTime()).toBeLessThan(Date.now());
  await resolveWait("steps-wait", "shipment", "ev-1", "2m");
  expect(await database.sql`select status, resume from jetfn.invocations where id = 'steps-wait'`).toEqual([
    { status: "queued", resume: "2m" },
  ]);
  await expect(resolveWait("steps-wait", "shipment", "ev-2", "2m")).rejects.toMatchObject({ code: "JF004" });
  // The timeout's run finds it matched: it is stale, the match's resumption goes on.
  await database.sql`update jetfn.invocations set status = 'running' where id = 'steps-wait'`;
  expect(await database.sql`select jetfn.time_out_wait('steps-wait', 'shipment', '2t') as t`).toEqual([{ t: false }]);
  // A later wait of the same invocation cannot take the same event again.
  await database.sql`update jetfn.invocations set status = 'running', resume = '2m' where id = 'steps-wait'`;
  await awaitEvent("steps-wait", "shipment#2", "3t", "2m");
  await expect(resolveWait("steps-wait", "shipment#2", "ev-1", "3m")).rejects.toMatchObject({ code: "JF004" });
  // Its timeout's run ends it timed out; a match after that is refused.
  await database.sql`update jetfn.invocations set status = 'running' where id = 'steps-wait'`;
  expect(await database.sql`select jetfn.time_out_wait('steps-wait', 'shipment#2', '3t') as t`).toEqual([{ t: true }]);
  await expect(resolveWait("steps-wait", "shipment#2", "ev-3", "3m")).rejects.toMatchObject({ code: "JF004" });
  expect(
    await database.sql`select key, status, event_id from jetfn.steps where invocation_id = 'steps-wait' order by seq`,
  ).toEqual([
    { key: "reserve", status: "succeeded", event_id: null },
    { key: "shipment", status: "matched", event_id: "ev-1" },
    { key: "shipment#2", status: "timed_out", event_id: null },
  ]);
});

it("refuses a wait whose timeout token names another step than the wait gets", async () => {
  await recordStep("steps-wait-3", "orders.fulfil", "reserve", 1);
  await expect(awaitEvent("steps-wait-3", "shipment", "3t")).rejects.toMatchObject({ code: "JF008" });
  expect(await recordOf("steps-wait-3")).toMatchObject({ status: "running" });
  await awaitEvent("steps-wait-3", "shipment", "2t");
  expect(await recordOf("steps-wait-3")).toMatchObject({ status: "awaiting" });
});

it("matches an event's data by the wait's paths, and refuses a wait to runtimes of the versions before", async () => {
  expect(
    await database.sql`select jetfn.match_values('{"orderId": "o_1", "customer": {"tier": "pro"}}'::jsonb,
      '{customer.tier,missing,orderId}'::text[]) as v`,
  ).toEqual([{ v: ["pro", null, "o_1"] }]);
  await awaitEvent("steps-wait-2", "shipment", "1t");
  await expect(
    database.sql`select outcome from jetfn.resume_invocation('steps-wait-2', 'orders.fulfil', '1t', 1, null)`,
  ).rejects.toMatchObject({ code: "JF006" });
  expect(
    await database.sql`select outcome from jetfn.resume_invocation('steps-wait-2', 'orders.fulfil', '1t', 1, null, true)`,
  ).toEqual([{ outcome: "run" }]);
});

it("lets exactly one of a match and a timeout's run go on, over 1,000 races", async () => {
  const ROUNDS = 1_000;
  const BATCH = 50;
  const outcomes = { matched: 0, timedOut: 0 };
  for (let start = 0; start < ROUNDS; start += BATCH) {
    const ids = Array.from({ length: BATCH }, (_, k) => `steps-race-${start + k}`);
    await Promise.all(ids.map((id) => awaitEvent(id, "shipment", "1t")));
    await Promise.all(
      ids.map(async (id, k) => {
        // The two sides in either order of sending: the database's locks decide, not the order.
        const match = resolveWait(id, "shipment", `ev-${id}`, "1m").then(
          () => true,
          (error: { code?: string }) => {
            if (error.code !== "JF004") throw error;
            return false;
          },
        );
        const timeout = (async () => {
          if (k % 2 === 0) await Promise.resolve();
          const [resumed] = await database.sql`
            select outcome from jetfn.resume_invocation(${id}, 'orders.fulfil', '1t', 1, null, true)`;
          if (resumed?.outcome !== "run") return false;
          const [row] = await database.sql`select jetfn.time_out_wait(${id}, 'shipment', '1t') as timed_out`;
          return row?.timed_out === true;
        })();
        const [matched, timedOut] = await Promise.all([match, timeout]);
        expect({ id, goesOn: Number(matched) + Number(timedOut) }).toEqual({ id, goesOn: 1 });
        const [record] = await database.sql`
          select i.status, i.resume, s.status as step from jetfn.invocations i
          join jetfn.steps s on s.invocation_id = i.id and s.key = 'shipment' where i.id = ${id}`;
        expect(record).toEqual(
          matched
            ? { status: "queued", resume: "1m", step: "matched" }
            : { status: "running", resume: "1t", step: "timed_out" },
        );
        outcomes[matched ? "matched" : "timedOut"]++;
      }),
    );
  }
  // Both sides won some races (each is sent first half of the time).
  expect(outcomes.matched + outcomes.timedOut).toBe(ROUNDS);
  expect(outcomes.matched).toBeGreaterThan(0);
  expect(outcomes.timedOut).toBeGreaterThan(0);
});
