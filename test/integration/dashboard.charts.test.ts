import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHART_RANGES } from "../../runtime/dashboard/chart-range";
import type { Series } from "../../runtime/dashboard/series-query";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// The charts' figures over HTTP: read from jetfn.invocations, so they cover every runtime, with
// exact counts and percentiles, bounded to the window through the updated_at BRIN index.
const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../functions");

let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  const runtime = await env.startRuntime();
  client = await env.client();
  dashboard = await startDashboard({ runtime, port: 0 });
}, 60_000);

afterAll(async () => {
  await dashboard?.close();
  await env?.close();
});

async function get(path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`${dashboard.url}${path}`, { redirect: "manual" });
  return { status: response.status, body: await response.text() };
}

async function series(query: string): Promise<Series> {
  const response = await get(`/api/series?${query}`);
  expect(response.status).toBe(200);
  return JSON.parse(response.body) as Series;
}

const sum = (figures: Series, key: "succeeded" | "errors") =>
  figures.buckets.reduce((total, bucket) => total + bucket[key], 0);

/** Rows as the runtime writes them, `minutesAgo` before now, for exact figures. */
async function insertRecords(
  fn: string,
  rows: { status: string; minutesAgo: number; ms?: number; errors?: { code: string; minutesAgo: number }[] }[],
): Promise<void> {
  // One clock for every row, in the middle of a 15-second bucket: rows written "2 minutes ago" fall
  // in one bucket, however long the inserts take (a row each, read from the clock, split them
  // across a bucket boundary now and then).
  const now = Math.floor(Date.now() / 15_000) * 15_000 - 7_500;
  for (const [index, row] of rows.entries()) {
    const finished = new Date(now - row.minutesAgo * 60_000);
    const errors = (row.errors ?? []).map((error, attempt) => ({
      attempt: attempt + 1,
      code: error.code,
      name: "Error",
      message: `${error.code} on purpose`,
      at: new Date(now - error.minutesAgo * 60_000).toISOString(),
    }));
    const ends = row.status !== "failed";
    await env.database.sql`
      insert into jetfn.invocations (id, function, status, attempts, errors, started_at, finished_at, updated_at)
      values (${`${fn}-${index}`}, ${fn}, ${row.status}, ${Math.max(1, errors.length)}, ${env.database.sql.json(errors)},
              ${new Date(finished.getTime() - (row.ms ?? 0))}, ${ends ? finished : null}, ${finished})`;
  }
}

describe("the charts' figures", () => {
  it("count succeeded jobs and failed attempts, and give p50/p99 of the jobs that ended", async () => {
    await insertRecords("synthetic", [
      ...Array.from({ length: 99 }, (_, index) => ({ status: "succeeded", minutesAgo: 2, ms: index + 1 })),
      // A job retried twice before it succeeded: two failed attempts, one success.
      {
        status: "succeeded",
        minutesAgo: 3,
        ms: 1_000,
        errors: [
          { code: "E_HANDLER", minutesAgo: 4 },
          { code: "E_HANDLER", minutesAgo: 3.5 },
        ],
      },
      // Waiting for its retry: no finished_at, but its error counts now.
      { status: "failed", minutesAgo: 1, errors: [{ code: "E_HANDLER_TIMEOUT", minutesAgo: 1 }] },
      // Cancelled by an operator: not an error.
      { status: "cancelled", minutesAgo: 1, errors: [{ code: "E_CANCELLED", minutesAgo: 1 }] },
      // Outside the 15-minute window.
      { status: "succeeded", minutesAgo: 40, ms: 5 },
    ]);
    const recent = await series("function=synthetic&range=15m");
    expect(recent.buckets).toHaveLength(60);
    expect(sum(recent, "succeeded")).toBe(100);
    expect(sum(recent, "errors")).toBe(3);
    const twoMinutesAgo = recent.buckets.find((bucket) => bucket.succeeded === 99);
    expect(twoMinutesAgo?.p50).toBe(50);
    expect(twoMinutesAgo?.p99).toBeCloseTo(98.02, 2);
    const hour = await series("function=synthetic&range=1h");
    expect(sum(hour, "succeeded")).toBe(101);
    expect(hour.buckets).toHaveLength(60);
    expect((await series("function=synthetic&range=24h")).buckets).toHaveLength(96);
  });

  it("add up every runtime's jobs, also of functions the serving runtime does not deploy", async () => {
    // A second runtime with the shipped examples; the dashboard's runtime has only the fixtures.
    await env.startRuntime({ functionsDir: EXAMPLES });
    const jobs = await Promise.all(Array.from({ length: 12 }, (_, n) => client.enqueue("primes.is-prime", { n })));
    for (const job of jobs) await client.result(job.id);
    const figures = await series("function=primes.is-prime&range=15m");
    expect(sum(figures, "succeeded")).toBe(12);
    const everything = await series("range=15m");
    expect(sum(everything, "succeeded")).toBeGreaterThanOrEqual(12 + 100);
    const page = await get("/functions/primes.is-prime?range=15m");
    expect(page.body).toContain('<strong class="total-attempts">12</strong>');
    expect(page.body).toContain("is not deployed on the runtime serving this dashboard");
  });

  it("reads only the window's rows, through the updated_at BRIN index", async () => {
    // A week of older rows, so the planner has a reason to use the index.
    await env.database.sql`
      insert into jetfn.invocations (id, function, status, attempts, started_at, finished_at, updated_at)
      select 'old-' || n, 'synthetic', 'succeeded', 1, t - interval '5 ms', t, t
      from generate_series(1, 200000) as n, lateral (select now() - interval '7 days' + n * interval '2.5 seconds') as at(t)
      where t < now() - interval '1 day'`;
    await env.database.sql`analyze jetfn.invocations`;
    const scans = async () => {
      const [row] = await env.database.sql`
        select idx_scan::int as scans from pg_stat_user_indexes where indexrelname = 'invocations_updated_brin'`;
      return row?.scans as number;
    };
    const before = await scans();
    for (const range of CHART_RANGES) await series(`function=synthetic&range=${range.name}`);
    await eventually(async () => (await scans()) >= before + CHART_RANGES.length);
  });
});

describe("the chart pages", () => {
  it("say so when the figures take longer than the statement timeout to read", async () => {
    // A lock held elsewhere makes the reads wait until their statement timeout ends them.
    const locker = await env.database.sql.reserve();
    try {
      await locker`begin`;
      await locker`lock table jetfn.invocations in access exclusive mode`;
      const fragment = await get("/fragments/charts?range=15m&function=add");
      expect(fragment.status).toBe(200);
      expect(fragment.body).toContain("took longer than 5 s to read; choose a shorter range");
      const page = await get("/functions/add?range=15m");
      expect(page.status).toBe(200);
      expect(page.body).toContain("took longer than the dashboard waits to read");
    } finally {
      await locker`rollback`;
      locker.release();
    }
  }, 30_000);

  it("draw three charts with time labels, a legend and a hover target per bucket, for each range", async () => {
    for (const range of CHART_RANGES) {
      const page = await get(`/functions/synthetic?range=${range.name}`);
      expect(page.status).toBe(200);
      for (const id of ["chart-throughput", "chart-errors", "chart-duration"])
        expect(page.body).toContain(`id="${id}"`);
      const hits = page.body.match(/<rect class="hit"/g) ?? [];
      expect(hits.length).toBe(3 * (range.spanMs / range.bucketMs));
      expect(page.body).toMatch(/<text x="[\d.]+" y="\d+" text-anchor="middle">\d\d:\d\d<\/text>/);
      expect(page.body).toContain(`data-every="${range.refreshMs}"`);
    }
    const home = await get("/?range=24h");
    expect(home.body).toContain('id="chart-duration"');
  });

  it("answers a range it does not offer with the reason on a page", async () => {
    for (const path of ["/functions/add?range=banana", "/?range=7d", "/fragments/charts?range=x"]) {
      const page = await get(path);
      expect(page.status).toBe(400);
      expect(page.body).toMatch(/range &quot;\w+&quot; is none of 15m, 1h, 24h/);
    }
  });
});

describe("the function page", () => {
  it("shows settings, what it does now, recent invocations, errors grouped by message and its audit changes", async () => {
    const failing = await Promise.all(
      ["disk full", "disk full", "<img src=x onerror=alert(1)>"].map((reason) => client.enqueue("boom", { reason })),
    );
    for (const job of failing) await eventually(async () => (await client.status(job.id)).status === "dead");
    const page = await get("/functions/boom");
    expect(page.body).toMatch(/<tr data-setting="retry"><th>retry<\/th><td>1 attempt\(s\)/);
    expect(page.body).toMatch(/<tr data-setting="timeout"><th>timeout<\/th><td>30s per attempt/);
    expect(page.body).toContain('<tr data-setting="file"><th>file</th><td><code>boom.ts</code>');
    expect(page.body).toContain('<div data-figure="instances"><dt>instances</dt><dd>1</dd></div>');
    const groups = page.body.match(/<table id="error-groups">[\s\S]*?<\/table>/)?.[0] ?? "";
    expect(groups).toMatch(
      /<td class="num">2<\/td><td>E_HANDLER_FAILED<\/td><td class="message">boom: disk full<\/td>/,
    );
    expect(groups).toContain("boom: &lt;img src=x onerror=alert(1)&gt;");
    expect(page.body).not.toContain("<img src=x");
    for (const job of failing) expect(page.body).toContain(`href="/invocations/${encodeURIComponent(job.id)}"`);

    const insert = await client.enqueue("insert-item", { name: "on-the-function-page" });
    await client.result(insert.id);
    const writer = await get("/functions/insert-item");
    expect(writer.body.match(/<table id="audit">[\s\S]*?<\/table>/)?.[0]).toContain("on-the-function-page");
    const now = await get("/fragments/functions/insert-item/now");
    expect(now.body).toContain('data-figure="queued"');
  });

  it("escapes a function name taken from the path", async () => {
    const page = await get(`/functions/${encodeURIComponent('"><script>alert(1)</script>')}`);
    expect(page.status).toBe(200);
    expect(page.body).not.toContain("<script>alert(1)");
    expect(page.body).toContain("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;");
  });
});

describe("the invocations list", () => {
  it("accepts every status, superseded included, and shows a bad filter's reason above the form it keeps", async () => {
    for (const status of [
      "queued",
      "scheduled",
      "running",
      "succeeded",
      "failed",
      "dead",
      "dropped",
      "cancelled",
      "superseded",
    ]) {
      expect((await get(`/invocations?status=${status}`)).status).toBe(200);
    }
    const bad = await get(`/invocations?status=${encodeURIComponent("<b>nope</b>")}&function=boom`);
    expect(bad.status).toBe(400);
    expect(bad.body).toMatch(
      /<p class="notice error filter-error">status &quot;&lt;b&gt;nope&lt;\/b&gt;&quot; is none of/,
    );
    expect(bad.body).toContain('<input name="function" placeholder="function" value="boom">');
    expect(bad.body).not.toContain("<b>nope</b>");
  });
});
