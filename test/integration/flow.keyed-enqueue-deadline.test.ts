import { once } from "node:events";
import { expect, it } from "vitest";
import { KEYED_ENQUEUE_DEADLINE_MS } from "../../runtime/flow/enqueue-deadline";
import { KEYED_ENQUEUE_TIMEOUT_MS } from "../../runtime/flow/keyed-enqueue-request";
import { createClient } from "../../runtime/sdk/client";
import type { JetfnError } from "../../runtime/support/errors";
import type { RuntimeEvents } from "../../runtime/triggers/events";
import { createTestDatabase } from "../helpers/database";
import { startDelayingProxy } from "../helpers/dropping-proxy";
import { startClusterFunctionsRuntime } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// A keyed enqueue is a chain of JetStream requests on the runtime, each allowed 5 s. On a slow NATS
// the chain outlasted the client's 20 s: the client reported a timeout while the runtime went on
// and might still store the job. The runtime now answers by its own 15 s deadline, saying whether
// the job was stored. The proxy between the runtime and NATS holds chosen requests back (each less
// than the runtime's 5 s request timeout, so none fails: the chain is only slow).

type Decide = (subject: string) => number | "drop";

async function start(decide: Decide) {
  const nats = await startNatsServer();
  let armed = false;
  const passed: string[] = [];
  const proxy = await startDelayingProxy(nats.port, (subject) => {
    if (!armed) return 0;
    passed.push(subject);
    return decide(subject);
  });
  const database = await createTestDatabase();
  const runtime = await startClusterFunctionsRuntime({
    natsUrl: proxy.url,
    databaseUrl: database.url,
    logger: captureLogs().logger,
  });
  const client = await createClient({ natsUrl: nats.url });
  stopWhenTestEnds(() => client.close());
  const arm = (on: boolean) => {
    armed = on;
  };
  return { runtime, client, arm, passed };
}

/** Runs `enqueue`, and returns its failure (or answer) and how long it took. */
async function timed<T>(enqueue: () => Promise<T>): Promise<{ ms: number; job?: T; error?: JetfnError }> {
  const started = Date.now();
  try {
    const job = await enqueue();
    return { ms: Date.now() - started, job };
  } catch (error) {
    return { ms: Date.now() - started, error: error as JetfnError };
  }
}

it("answers E_UNAVAILABLE, nothing stored, by its deadline when the reads before the claim are slow", async () => {
  // 4 reads in a row (the chosen id's two delayed streams and waiting jobs, then the key's claim),
  // each 4 s: the claim's read is still unanswered at 15 s. Nothing is written before it.
  const slow = (subject: string) =>
    subject.startsWith("$JS.API.STREAM.MSG.GET.") ||
    subject.startsWith("$JS.API.DIRECT.GET.KV_JETFN_JOB_KEYS.") ||
    subject.startsWith("$KV.JETFN_JOB_KEYS.") ||
    subject === "fn.job.add";
  const { runtime, client, arm, passed } = await start((subject) => (slow(subject) ? 4_000 : 0));
  const options = { id: "deadline-singleton-01", singleton: { key: "deadline" } };
  const overran = once(runtime.events, "enqueue:overran") as Promise<RuntimeEvents["enqueue:overran"]>;

  arm(true);
  const { ms, error, job } = await timed(() => client.enqueue("add", { a: 1, b: 2 }, options));
  expect(job).toBeUndefined();
  expect(error?.code).toBe("E_UNAVAILABLE");
  expect(error?.message).toMatch(/stopped before its job was stored.*nothing was enqueued/);
  expect(ms).toBeLessThan(KEYED_ENQUEUE_TIMEOUT_MS);

  // The runtime's work went on in the background, and stopped before writing anything.
  const [ended] = await overran;
  arm(false);
  expect(ended).toEqual({ fn: "add", invocationId: options.id, answered: "not-stored", outcome: "not-stored" });
  expect(passed.filter((subject) => subject.startsWith("$KV.") || subject.startsWith("fn.job."))).toEqual([]);
  // No record, stream or bucket knows the id (`jetfn status` says E_NOT_FOUND).
  expect(await client.status(options.id)).toMatchObject({ status: "pending", function: null });
  // So enqueuing again stores the job (the key was never claimed).
  expect(await client.enqueue("add", { a: 1, b: 2 }, options)).toMatchObject({ id: options.id, existing: false });
  expect(await client.result(options.id)).toEqual({ sum: 3 });
});

it("answers with the stored job by its deadline when the steps after the publish are slow, and finishes them", async () => {
  const { runtime, client, arm } = await start((subject) => {
    // Before the publish: 6 s of reads, so the publish (3 s) starts well within the deadline.
    if (subject.startsWith("$JS.API.STREAM.MSG.GET.JETFN_JOBS_DELAYED")) return 3_000;
    if (subject.startsWith("jetfn.delayed.")) return 3_000;
    // After it, taking the key: 12 s more, past the deadline.
    if (subject === "$JS.API.STREAM.INFO.JETFN_JOBS_DELAYED") return 3_000;
    if (subject.startsWith("$JS.API.DIRECT.GET.KV_JETFN_JOB_KEYS.")) return 3_000;
    if (subject.startsWith("$KV.JETFN_JOB_KEYS.")) return 3_000;
    if (subject === "$JS.API.STREAM.MSG.DELETE.JETFN_JOBS_DELAYED") return 3_000;
    return 0;
  });
  const debounce = { key: "deadline", period: "60s" };
  const first = await client.enqueue("add", { a: 1, b: 1 }, { id: "deadline-debounce-01", debounce });
  const overran = once(runtime.events, "enqueue:overran") as Promise<RuntimeEvents["enqueue:overran"]>;

  arm(true);
  const id = "deadline-debounce-02";
  const { ms, error, job } = await timed(() => client.enqueue("add", { a: 2, b: 2 }, { id, debounce }));
  expect(error).toBeUndefined();
  expect(job).toMatchObject({ id, duplicate: false });
  expect(ms).toBeGreaterThanOrEqual(KEYED_ENQUEUE_DEADLINE_MS - 1_000);
  expect(ms).toBeLessThan(KEYED_ENQUEUE_TIMEOUT_MS);

  // Taking the key was not cut off: it went on, and superseded the first job of the burst.
  const [ended] = await overran;
  arm(false);
  expect(ended).toEqual({ fn: "add", invocationId: id, answered: "stored", outcome: "stored" });
  expect((await client.status(first.id)).status).toBe("superseded");
  expect((await client.status(id)).status).toBe("scheduled");
});

it("answers E_HANDLER_TIMEOUT, naming the job, when the publish itself went unanswered", async () => {
  // The publish is lost: JetStream may or may not have stored it, so the answer says so, with the
  // id (chosen by the runtime here) to look it up and to enqueue again under.
  let lost = false;
  const { client, arm } = await start((subject) => {
    if (lost || !subject.startsWith("jetfn.delayed.")) return 0;
    lost = true;
    return "drop";
  });
  arm(true);
  const debounce = { key: "lost-publish", period: "60s" };
  const { ms, error } = await timed(() => client.enqueue("add", { a: 3, b: 3 }, { debounce }));
  arm(false);
  expect(error?.code).toBe("E_HANDLER_TIMEOUT");
  expect(error?.message).toMatch(/may or may not have been stored/);
  expect(ms).toBeLessThan(KEYED_ENQUEUE_TIMEOUT_MS);
  const id = (error as JetfnError & { invocationId?: string }).invocationId ?? "";
  expect(error?.message).toContain(`jetfn status ${id}`);
  // Here it was not: the id is unknown, and enqueuing again under it stores the job.
  expect(await client.status(id)).toMatchObject({ status: "pending", function: null });
  expect(await client.enqueue("add", { a: 3, b: 3 }, { id, debounce })).toMatchObject({ id, duplicate: false });
});

it("keeps a singleton's key when JetStream stored its job without confirming, so a second enqueue joins it", async () => {
  // The claim was given back on any failed publish: this one was stored (6 s late, after the
  // runtime's 5 s request gave up), and the next enqueue of the key took the claim and stored a
  // second job. Now the claim stays, and a publish under the same id learns the stored sequence.
  // The first job is delayed, so that it still holds the key when the second comes.
  let delayed = false;
  const { client, arm } = await start((subject) => {
    if (delayed || !subject.startsWith("jetfn.delayed.")) return 0;
    delayed = true;
    return 6_000;
  });
  arm(true);
  const singleton = { key: "late-confirm" };
  const first = await timed(() =>
    client.enqueue("add", { a: 4, b: 4 }, { id: "late-confirm-01", singleton, delay: "1h" }),
  );
  expect(first.error?.code).toBe("E_HANDLER_TIMEOUT");
  const second = await client.enqueue("add", { a: 5, b: 5 }, { id: "late-confirm-02", singleton });
  arm(false);
  expect(second).toMatchObject({ id: "late-confirm-01", existing: true });
  // One job, stored once, though published twice.
  expect(await client.status("late-confirm-01")).toMatchObject({ status: "scheduled" });
  expect(await client.status("late-confirm-02")).toMatchObject({ status: "pending", function: null });
  // Once the original publish has landed too, the key still names the one job.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  const third = await client.enqueue("add", { a: 6, b: 6 }, { id: "late-confirm-03", singleton });
  expect(third).toMatchObject({ id: "late-confirm-01", existing: true });
});
