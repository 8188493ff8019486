import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "../../runtime";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { defineEvent } from "../../runtime/sdk/define-event";
import type { JetfnError } from "../../runtime/support/errors";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };
let dir: string;

/** A listener recording every delivery (and its attempt) in `hits`; `failFirst` fails attempt 1. */
function listenerSource(on: string, options: { failFirst?: boolean; onFrom?: string } = {}): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  on: ${JSON.stringify(on)},
  ${options.onFrom ? `onFrom: ${JSON.stringify(options.onFrom)},` : ""}
  input: z.object({ n: z.number() }),
  retry: { attempts: 3, backoff: ["200ms"] },
  async handler({ n }, ctx) {
    await ctx.db.execute(\`insert into hits (listener, n, invocation, attempt) values ('\${ctx.functionName}', \${n}, '\${ctx.invocationId}', \${ctx.attempt})\`);
    ${options.failFirst ? 'if (ctx.attempt === 1) throw new Error("first delivery fails");' : ""}
    return { n };
  },
});
`;
}

const EMITTER = `import { defineFunction, NonRetryableError, z } from "jetfn";
export default defineFunction({
  input: z.object({ n: z.number(), fail: z.boolean().default(false) }),
  async handler({ n, fail }, ctx) {
    const { id } = await ctx.emit("thing.created", { n });
    if (fail) throw new NonRetryableError("failing after emit: the event must not be published");
    return { event: id };
  },
});
`;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table hits (id serial primary key, listener text, n int, invocation text, attempt int)`;
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-events-"));
  await writeFile(path.join(dir, "exact.ts"), listenerSource("thing.created"));
  await writeFile(path.join(dir, "star.ts"), listenerSource("thing.*"));
  await writeFile(path.join(dir, "flaky.ts"), listenerSource("thing.>", { failFirst: true }));
  await writeFile(path.join(dir, "elsewhere.ts"), listenerSource("other.created"));
  await writeFile(path.join(dir, "emitter.ts"), EMITTER);
  await writeFile(path.join(dir, "bad-on.ts"), listenerSource("Thing.Created"));
  runtime = await env.startRuntime({ functionsDir: dir, watch: true });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function hitsFor(n: number): Promise<{ listener: string; attempt: number; invocation: string }[]> {
  return (await env.database.sql`
    select listener, attempt, invocation from hits where n = ${n} order by listener, attempt`) as never;
}

/**
 * Waits until every listener of thing.created has committed event `n`, then returns the hits
 * (flaky's first attempt rolled back, so only its second shows).
 */
async function deliveredToAll(n: number) {
  return eventually(async () => {
    const hits = await hitsFor(n);
    const flaky = hits.filter((hit) => hit.listener === "flaky");
    return hits.some((hit) => hit.listener === "exact") &&
      hits.some((hit) => hit.listener === "star") &&
      flaky.length === 1
      ? hits
      : undefined;
  });
}

describe("events with fan-out on fn.event.<name>", () => {
  it("refuses an invalid `on` pattern at deploy and deploys the rest", () => {
    expect(runtime.registry.names()).toEqual(["elsewhere", "emitter", "exact", "flaky", "star"]);
    const refused = runtime.logs.lines.find((line) => String(line.msg).includes("option on must be"));
    expect(refused?.msg).toContain('"Thing.Created"');
  });

  it("delivers an emitted event to every matching listener once; a failing listener retries alone", async () => {
    const emitted = await client.emit("thing.created", { n: 1 });
    const hits = await deliveredToAll(1);
    expect(hits.map((hit) => [hit.listener, hit.attempt])).toEqual([
      ["exact", 1],
      ["flaky", 2],
      ["star", 1],
    ]);
    // Each listener has its own invocation record of the same event; the failure stays in flaky's.
    const ids = [...new Set(hits.map((hit) => hit.invocation))];
    expect(ids).toHaveLength(3);
    const views = await Promise.all(
      ids.map((id) =>
        eventually(async () => {
          const view = await client.status(id);
          return view.status === "succeeded" ? view : undefined;
        }),
      ),
    );
    const attempts = Object.fromEntries(views.map((view) => [view.function, view.attempts]));
    expect(attempts).toEqual({ exact: 1, star: 1, flaky: 2 });
    expect(emitted.duplicate).toBe(false);
    // Nothing for a listener of another event, and no extra deliveries later.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await hitsFor(1)).toHaveLength(3);
    expect((await env.database.sql`select count(*)::int as c from hits where listener = 'elsewhere'`)[0]?.c).toBe(0);
  });

  it("takes a plain JetStream publish to fn.event.<name> from any client", async () => {
    const nc = await connect({ servers: env.nats.url });
    try {
      const ack = await jetstream(nc).publish("fn.event.thing.created", JSON.stringify({ n: 2 }));
      expect(ack.stream).toBe("JETFN_EVENTS");
    } finally {
      await nc.close();
    }
    expect((await deliveredToAll(2)).map((hit) => hit.listener)).toEqual(["exact", "flaky", "star"]);
  });

  it("publishes ctx.emit only when the emitting invocation commits", async () => {
    const failed = await client.enqueue("emitter", { n: 4, fail: true });
    const done = await client.enqueue("emitter", { n: 3 });
    expect((await deliveredToAll(3)).length).toBe(3);
    await eventually(async () => (await client.status(failed.id)).status === "dead");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await hitsFor(4)).toEqual([]);
    expect((await client.status(done.id)).status).toBe("succeeded");
  });

  it("validates emits against the event's schema and name", async () => {
    defineEvent("typed.event", z.object({ x: z.number() }));
    await expect(client.emit("typed.event", { x: "no" })).rejects.toMatchObject({ code: "E_INPUT_INVALID" });
    const refused = (await client.emit("Bad Name", {}).catch((error: unknown) => error)) as JetfnError;
    expect(refused.code).toBe("E_INPUT_INVALID");
    expect(refused.message).toContain("not a valid event name");
    await expect(client.emit("typed.event", { x: 1 })).resolves.toMatchObject({ duplicate: false });
  });

  it("starts a listener deployed later at new events, unless onFrom is all", async () => {
    await client.emit("late.event", { n: 10 });
    await writeFile(path.join(dir, "late-new.ts"), listenerSource("late.event"));
    await writeFile(path.join(dir, "late-all.ts"), listenerSource("late.event", { onFrom: "all" }));
    await eventually(
      () => runtime.registry.names().includes("late-new") && runtime.registry.names().includes("late-all"),
    );
    await runtime.settled();
    await client.emit("late.event", { n: 11 });
    await eventually(async () => {
      const rows = await env.database.sql`select listener, n from hits where n in (10, 11) order by listener, n`;
      return rows.length >= 3 ? rows : undefined;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const rows = await env.database.sql`select listener, n from hits where n in (10, 11) order by listener, n`;
    expect(rows.map((row) => `${row.listener}:${row.n}`)).toEqual(["late-all:10", "late-all:11", "late-new:11"]);
  });
});
