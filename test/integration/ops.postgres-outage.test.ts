import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Runtime, startRuntime } from "../../runtime/runtime";
import { createClient, type JetfnClient } from "../../runtime/sdk/client";
import { eventually, FIXTURE_FUNCTIONS } from "../helpers/environment";
import { type CapturedLogger, captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";
import { type PrivatePostgres, startPrivatePostgres } from "../helpers/private-postgres";

// The cancel and dead-letter APIs read Postgres. While it is away they answer as the status API
// does: 503 E_DATABASE_UNAVAILABLE, asked again once it answers, and a warning in the runtime's
// log; not a 500 and an error logged as a bug. So does the enqueue API, for a keyed enqueue whose
// chosen id it looks up; a debounced job it stored and gave the key is answered as enqueued, though
// the job it replaced could not be recorded `superseded` yet (the mover does it when that one falls due).
let postgres: PrivatePostgres;
let nats: TestNatsServer;
let runtime: Runtime;
let client: JetfnClient;
let logs: CapturedLogger;

beforeAll(async () => {
  [postgres, nats] = await Promise.all([startPrivatePostgres(), startNatsServer()]);
  logs = captureLogs();
  runtime = await startRuntime({
    natsUrl: nats.url,
    databaseUrl: postgres.url,
    functionsDir: FIXTURE_FUNCTIONS,
    logger: logs.logger,
    migrate: true,
    shutdownGrace: "5s",
    databasePoolSize: 4,
  });
  client = await createClient({ natsUrl: nats.url });
}, 120_000);

afterAll(async () => {
  await client?.close();
  await runtime?.stop();
  await Promise.allSettled([nats?.stop(), postgres?.stop()]);
});

/** The status of a job once it ended, else undefined. */
async function endedStatus(id: string): Promise<string | undefined> {
  const { status } = await client.status(id);
  return ["succeeded", "superseded", "dead"].includes(status) ? status : undefined;
}

describe("the operator APIs while Postgres is away", () => {
  it("answer E_DATABASE_UNAVAILABLE, and answer again once it is back", { timeout: 120_000 }, async () => {
    let last = { id: "" };
    expect(await client.deadLetters()).toEqual([]);
    const debounce = { key: "outage", period: "3s" };
    const replaced = await client.enqueue("echo", { value: "replaced" }, { debounce });
    await postgres.down();
    const unavailable = (request: string) => ({
      code: "E_DATABASE_UNAVAILABLE",
      status: 503,
      message: `Postgres is unreachable; the ${request} request can be asked again once it answers.`,
    });
    try {
      await expect(client.cancel("outage-job-0001")).rejects.toMatchObject(unavailable("cancel"));
      await expect(client.deadLetters()).rejects.toMatchObject(unavailable("dead-letter"));
      await expect(client.retryDeadLetter("outage-job-0001")).rejects.toMatchObject(unavailable("dead-letter"));
      await expect(client.dropDeadLetter("outage-job-0001")).rejects.toMatchObject(unavailable("dead-letter"));
      await expect(client.status("outage-job-0001")).rejects.toMatchObject(unavailable("status"));
      await expect(
        client.enqueue("echo", {}, { id: "outage-job-0002", singleton: { key: "outage" } }),
      ).rejects.toMatchObject(unavailable("enqueue"));
      // Stored, and the key is its: a failure here would make a retrying client enqueue a second job.
      last = await client.enqueue("echo", { value: "last" }, { debounce });
    } finally {
      await postgres.up();
    }
    expect(logs.matching("request failed")).toEqual([]);
    expect(logs.matching("keyed enqueue failed")).toEqual([]);
    expect(logs.matching("Postgres is unreachable").length).toBeGreaterThanOrEqual(6);
    expect(await eventually(async () => endedStatus(replaced.id), 30_000)).toBe("superseded");
    expect(await eventually(async () => endedStatus(last.id), 30_000)).toBe("succeeded");
    // The pool reconnects: the same requests are answered again.
    expect(await eventually(() => client.deadLetters(), 30_000)).toEqual([]);
    await expect(client.dropDeadLetter("outage-job-0001")).rejects.toMatchObject({ code: "E_NOT_FOUND" });
  });
});
