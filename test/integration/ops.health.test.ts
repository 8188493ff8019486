// The operations endpoint of a real runtime: /livez, /readyz (NATS, Postgres, functions, shutdown),
// /metrics checked by promtool's rules, and JETFN_METRICS_HOST moving it off loopback.
import { readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { spawnCli } from "../helpers/cli";
import { adminUrl } from "../helpers/database-url";
import { createTestEnvironment, eventually, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";
import { freePort } from "../helpers/free-port";
import { findPromtool, lintMetrics, promtoolCheck } from "../helpers/metrics-lint";

let env: TestEnvironment;
let client: JetfnClient;
let port: number;

/** An address of this machine other than loopback, where there is one. */
const outsideAddress = Object.values(networkInterfaces())
  .flat()
  .find((address) => address?.family === "IPv4" && !address.internal)?.address;
const promtool = findPromtool();

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  port = await freePort();
  await env.startRuntime({ metricsPort: port }, { laterTestsUseIt: true });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

async function readiness(url = `http://127.0.0.1:${port}/readyz`): Promise<{ status: number; body: unknown }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.json() };
}

describe("health checks", () => {
  it("answers /livez with 200 and /readyz with 200 and each check's verdict", async () => {
    const live = await fetch(`http://127.0.0.1:${port}/livez`);
    expect([live.status, await live.text()]).toEqual([200, "ok\n"]);
    expect(await readiness()).toEqual({
      status: 200,
      body: { status: "ready", checks: { runtime: "ok", nats: "ok", postgres: "ok", functions: "ok" } },
    });
    const other = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(other.status).toBe(404);
    expect(await other.text()).toContain("/metrics, /livez, /readyz");
    // Paths are looked up as own keys only: nothing reaches the route table's prototype.
    for (const name of ["/constructor", "/__proto__", "/toString"]) {
      expect((await fetch(`http://127.0.0.1:${port}${name}`)).status).toBe(404);
    }
    expect((await fetch(`http://127.0.0.1:${port}/readyz`, { method: "POST" })).status).toBe(404);
  });

  it("is live and not ready while the runtime starts, ready once its functions are deployed", {
    timeout: 90_000,
  }, async () => {
    const startingPort = await freePort();
    const url = `http://127.0.0.1:${startingPort}/readyz`;
    // A file whose top-level code never ends holds the start until its load times out.
    const starting = env.startRuntime({
      metricsPort: startingPort,
      functionsDir: path.resolve(FIXTURE_FUNCTIONS, "../endless-load"),
      loadTimeout: "3s",
    });
    // The endpoint opens once NATS and Postgres are set up, which on a loaded machine took over 10 s
    // (fetch refused until then); the deploy then holds the start for the 3 s load timeout.
    const during = await eventually(async () => {
      const answer = await readiness(url);
      return answer.status === 503 ? answer : undefined;
    }, 60_000);
    expect(during.body).toMatchObject({ status: "not ready", checks: { runtime: "starting" } });
    expect((await fetch(`http://127.0.0.1:${startingPort}/livez`)).status).toBe(200);
    await starting;
    expect(await readiness(url)).toMatchObject({ status: 200, body: { checks: { runtime: "ok", functions: "ok" } } });
  });

  it("is not ready while Postgres refuses connections, and ready again after", async () => {
    const name = new URL(env.database.url).pathname.slice(1);
    // A database cannot refuse connections while the session changing it is connected to it.
    const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`alter database "${name}" allow_connections false`);
      await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'jetfn-readiness'`;
      const down = await eventually(async () => {
        const answer = await readiness();
        return answer.status === 503 ? answer : undefined;
      });
      expect(down.body).toMatchObject({
        status: "not ready",
        checks: { nats: "ok", functions: "ok", postgres: expect.stringContaining("Postgres") },
      });
    } finally {
      await admin.unsafe(`alter database "${name}" allow_connections true`);
      await admin.end();
    }
    await eventually(async () => (await readiness()).status === 200);
  });

  it("is not ready once shutdown begins, while in-flight work still finishes", async () => {
    const drainingPort = await freePort();
    const runtime = await env.startRuntime({ metricsPort: drainingPort });
    let started = false;
    runtime.events.on("invocation:start", () => {
      started = true;
    });
    // Both runtimes pull jobs: enqueue until this one runs one, so its shutdown has work to wait for.
    const jobs = [];
    for (let index = 0; index < 40 && !started; index++) {
      jobs.push(await client.enqueue("sleepy-insert", { name: `in-flight-${index}`, ms: 2_000 }));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(started).toBe(true);
    const stopped = runtime.stop();
    const during = await readiness(`http://127.0.0.1:${drainingPort}/readyz`);
    expect(during).toMatchObject({ status: 503, body: { status: "not ready", checks: { runtime: "shutting down" } } });
    expect((await fetch(`http://127.0.0.1:${drainingPort}/livez`)).status).toBe(200);
    await stopped;
    await expect(fetch(`http://127.0.0.1:${drainingPort}/livez`)).rejects.toThrow();
    for (const job of jobs) await client.result(job.id, { timeout: "30s" });
  });
});

describe("the metrics scrape", () => {
  it("passes promtool's rules on the whole scrape", async () => {
    await client.call("add", { a: 1, b: 2 });
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toMatch(/^jetfn_invocations_total\{fn="add",kind="call",outcome="succeeded"\} [1-9]/m);
    expect(text).toMatch(/^nodejs_active_handles\{type="[A-Za-z]+"\} \d+/m);
    expect(lintMetrics(text)).toEqual([]);
    if (promtool) expect(promtoolCheck(promtool, text)).toEqual({ status: 0, output: "" });
  });
});

describe("JETFN_METRICS_HOST", () => {
  it.skipIf(outsideAddress === undefined)("listens on loopback only by default", async () => {
    await expect(fetch(`http://${outsideAddress}:${port}/livez`)).rejects.toThrow();
  });

  it.skipIf(outsideAddress === undefined)("serves a scraper on another host when set to 0.0.0.0", async () => {
    const openPort = await freePort();
    await env.startRuntime({ metricsPort: openPort, metricsHost: "0.0.0.0" });
    const response = await fetch(`http://${outsideAddress}:${openPort}/readyz`);
    expect(response.status).toBe(200);
    expect((await fetch(`http://${outsideAddress}:${openPort}/metrics`)).status).toBe(200);
  });
});

describe("jetfn start --metrics-host", () => {
  it.skipIf(outsideAddress === undefined)("serves health checks where the flags say", async () => {
    const cliPort = await freePort();
    const cli = spawnCli(["start", "--metrics-port", String(cliPort), "--metrics-host", "0.0.0.0"], {
      NATS_URL: env.nats.url,
      DATABASE_URL: env.database.url,
      JETFN_FUNCTIONS: FIXTURE_FUNCTIONS,
    });
    await cli.waitFor("Runtime ready");
    expect(await readiness(`http://${outsideAddress}:${cliPort}/readyz`)).toMatchObject({ status: 200 });
    expect(await cli.stop()).toBe(0);
  });
});

describe("when NATS stops answering", () => {
  it("is not ready, naming NATS, while the process stays live; ready again when it answers", async () => {
    const pid = env.nats.pid as number;
    // A frozen server (SIGSTOP) keeps its connections open but answers nothing, like a hung node.
    process.kill(pid, "SIGSTOP");
    try {
      // The signal is delivered asynchronously: wait until every thread of the server has stopped.
      await eventually(() => readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("T"));
      const down = await readiness();
      expect(down).toMatchObject({
        status: 503,
        body: { checks: { nats: "NATS did not answer within 2000 ms", postgres: "ok" } },
      });
      expect((await fetch(`http://127.0.0.1:${port}/livez`)).status).toBe(200);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    await eventually(async () => (await readiness()).status === 200);
  });
});
