import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { emitInTransaction } from "../../runtime/db/outbox";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A listener's invocation id for an event is derived from the listener's name and the event's id,
// which an app may choose (`emitInTransaction(tx, ..., { id: "comment-7" })`). A client publishing a
// job to the listener with that derived id before the event must not take the event's place: the
// event still runs with its own data, and the client's job is refused.
let env: TestEnvironment;
let dir: string;

const LISTENER = `import { defineFunction, z } from "jetfn";
export default defineFunction({
  on: "comment.created",
  input: z.object({ n: z.number() }),
  async handler({ n }, ctx) {
    await ctx.db.execute(\`insert into hits (n, invocation) values (\${n}, '\${ctx.invocationId}')\`);
    return { n };
  },
});
`;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table hits (id serial primary key, n int, invocation text)`;
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-listener-hijack-"));
  await writeFile(path.join(dir, "notify.ts"), LISTENER);
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The listener's id for an event, as a client can compute it from the listener's name and the event id. */
function listenerId(listener: string, eventId: string): string {
  const hex = createHash("sha256").update(`${listener}\n${eventId}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

it("runs an event's listener with the event's data when a client took its id first", { timeout: 90_000 }, async () => {
  const runtime = await env.startRuntime({ functionsDir: dir });
  const refused: string[] = [];
  runtime.events.on("invocation:failure", (event) => {
    if (event.fn === "notify") refused.push(event.error.code);
  });
  const stolen = listenerId("notify", "comment-7");
  const client = await env.client();
  const header = headers();
  header.set("Jetfn-Id", stolen);
  await jetstream(client.connection).publish("fn.job.notify", JSON.stringify({ n: 666 }), {
    msgID: "attacker-1",
    headers: header,
  });
  await eventually(() => refused.length > 0 || undefined, 30_000).catch(() => undefined);

  await drizzle(env.database.sql).transaction(async (tx) => {
    await emitInTransaction(tx, "comment.created", { n: 7 }, { id: "comment-7" });
  });
  const hits = await eventually(async () => {
    const rows = await env.database.sql`select n, invocation from hits where n = 7`;
    return rows.length > 0 ? rows : undefined;
  }, 30_000).catch(() => []);
  const all = await env.database.sql`select n, invocation from hits order by id`;
  await runtime.stop();
  expect(hits.map((row) => ({ n: row.n, invocation: row.invocation }))).toEqual([{ n: 7, invocation: stolen }]);
  expect(all.map((row) => row.n)).toEqual([7]);
  expect(refused).toEqual(["E_INPUT_INVALID"]);
});
