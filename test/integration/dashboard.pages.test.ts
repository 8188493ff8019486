import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// The dashboard's pages over HTTP: figures, filters, sign-in and actions. The browser flows are in
// dashboard.browser.test.ts.
const TOKEN = "pages-token-0123456789";
const SIGNED_IN = { authorization: `Bearer ${TOKEN}` };

let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  const runtime = await env.startRuntime();
  client = await env.client();
  dashboard = await startDashboard({ runtime, port: 0, token: TOKEN });
}, 60_000);

afterAll(async () => {
  await dashboard?.close();
  await env?.close();
});

async function get(
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; type: string }> {
  const response = await fetch(`${dashboard.url}${path}`, { headers, redirect: "manual" });
  return { status: response.status, body: await response.text(), type: response.headers.get("content-type") ?? "" };
}

async function post(path: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${dashboard.url}${path}`, { method: "POST", headers, redirect: "manual" });
}

/** The text of the functions table row of `fn`, cell by cell. */
function cells(body: string, fn: string): string[] {
  const row = body.match(new RegExp(`<tr data-function="${fn}">([\\s\\S]*?)</tr>`))?.[1] ?? "";
  return [...row.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((match) => (match[1] as string).replace(/<[^>]+>/g, ""));
}

describe("figures", () => {
  it("shows 100.0% errors for a function that always fails, and no time to drain when idle", async () => {
    const jobs = await Promise.all([1, 2].map((n) => client.enqueue("boom", { reason: `rate ${n}` })));
    for (const job of jobs) await eventually(async () => (await client.status(job.id)).status === "dead");
    await client.call("add", { a: 1, b: 1 });
    const row = await eventually(async () => {
      const found = cells((await get("/fragments/functions")).body, "boom");
      return Number(found[2]) >= 2 ? found : undefined;
    });
    expect(row[3]).toBe("100.0%");
    const add = cells((await get("/fragments/functions")).body, "add");
    expect(add[3]).toBe("0.0%");
    // Nothing queued: "–", not a "0ms" that reads as a measurement.
    expect(add[9]).toBe("–");
  });

  it("writes every time one way, with the ISO time as its tooltip", async () => {
    const job = await client.enqueue("add", { a: 2, b: 3 });
    await client.result(job.id);
    const list = await get(`/invocations?id=${job.id}`);
    expect(list.body).toMatch(
      /<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z" title="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<\/time>/,
    );
    // Not Postgres' own text format ("2026-12-06 13:01:39.123+00").
    expect(list.body).not.toMatch(/\d\d:\d\d:\d\d\.\d+\+00/);
    const page = await get(`/invocations/${job.id}`);
    expect(page.body).toMatch(/enqueued <time datetime=/);
  });
});

describe("bad filters", () => {
  it.each([
    ["/invocations?since=banana", '"banana" is neither a duration'],
    ["/invocations?status=nope", 'status "nope" is none of'],
    ["/invocations?offset=-3", 'offset "-3" is not a whole number'],
    ["/audit?since=banana", '"banana" is neither a duration'],
  ])("answers %s with 400 and the reason on a page", async (path, reason) => {
    const answer = await get(path);
    expect(answer.status).toBe(400);
    expect(answer.type).toContain("text/html");
    expect(answer.body).toContain("<nav>");
    expect(answer.body).toContain(reason.replaceAll('"', "&quot;"));
  });
});

describe("invocations list", () => {
  it("lists cancelled and scheduled jobs, each under its status", async () => {
    const later = await client.enqueue("add", { a: 5, b: 5 }, { delay: "1h" });
    const scheduled = await eventually(async () => {
      const answer = await get("/invocations?status=scheduled");
      return answer.body.includes(later.id) ? answer.body : undefined;
    });
    expect(scheduled).toContain("due <time");
    expect((await get("/invocations")).body).toContain("delayed job(s)</a> waiting");
    const form = (await get("/invocations")).body;
    for (const status of ["scheduled", "cancelled", "queued", "running"]) expect(form).toContain(`value="${status}"`);

    const cancelled = await post(`/invocations/${later.id}/cancel`, SIGNED_IN);
    expect(cancelled.status).toBe(303);
    expect(decodeURIComponent(cancelled.headers.get("location") ?? "")).toContain(`cancelled ${later.id}`);
    await eventually(async () => (await client.status(later.id)).status === "cancelled");
  });

  it("pages past 200 rows with a next-page link that keeps the filters", async () => {
    await env.database.sql`
      insert into jetfn.invocations (id, function, status, attempts, updated_at, enqueued_at)
      select 'paged-' || lpad(n::text, 4, '0'), 'paged', 'cancelled', 0, now() - n * interval '1 second', now()
      from generate_series(1, 205) n`;
    const first = await get("/invocations?function=paged&status=cancelled");
    expect(first.body.match(/<tr><td><a href="\/invocations\/paged-/g)?.length).toBe(200);
    const next = first.body.match(/<a rel="next" class="next" href="([^"]+)"/)?.[1]?.replaceAll("&amp;", "&");
    expect(next).toBe("/invocations?function=paged&status=cancelled&offset=200");
    const second = await get(next as string);
    expect(second.body.match(/<tr><td><a href="\/invocations\/paged-/g)?.length).toBe(5);
    expect(second.body).toContain("paged-0205");
    expect(second.body).not.toContain('rel="next"');
    expect(second.body).toContain('rel="prev"');
  });
});

describe("a running job's page", () => {
  it("shows when it was enqueued and its input", async () => {
    const job = await client.enqueue("progress", { steps: 20, stepMs: 250 });
    await eventually(async () => (await client.status(job.id)).status === "running", 15_000);
    const page = await get(`/invocations/${job.id}`, SIGNED_IN);
    expect(page.body).toContain("status-running");
    expect(page.body).toMatch(/enqueued <time datetime=/);
    expect(page.body).toContain("&quot;stepMs&quot;: 250");
    expect(page.body).toContain('class="cancel"');
    expect((await get(`/invocations/${job.id}`)).body).toContain("to cancel this job");
    await client.cancel(job.id);
  });
});

describe("actions and signing in", () => {
  it("shows a sign-in hint instead of buttons, and answers an action without the token with a page", async () => {
    const job = await client.enqueue("boom", { reason: "hint" });
    await eventually(async () => (await client.status(job.id)).status === "dead");
    const open = await get("/dead-letters?function=boom");
    expect(open.body).toContain(job.id);
    expect(open.body).toContain('href="/sign-in?next=%2Fdead-letters%3Ffunction%3Dboom"');
    expect(open.body).not.toContain('class="retry"');
    expect(open.body).not.toContain('class="retry-all"');
    const signedIn = await get("/dead-letters?function=boom", SIGNED_IN);
    expect(signedIn.body).toContain('class="retry"');
    expect(signedIn.body).toContain('class="retry-all"');

    const refused = await post(`/dead-letters/${job.id}/retry`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("content-type")).toContain("text/html");
    expect(await refused.text()).toContain('href="/sign-in?next=%2Fdead-letters"');
  });

  it("signs in through the form, which posts the token (never in a URL), and returns to the page it came from", async () => {
    const form = await get("/sign-in?next=%2Fdead-letters");
    expect(form.body).toContain('type="password" name="token"');
    expect(form.body).toContain('method="post" action="/sign-in"');
    const signIn = (token: string, next: string): Promise<Response> =>
      fetch(`${dashboard.url}/sign-in`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token, next }).toString(),
        redirect: "manual",
      });
    const refused = await signIn("wrong", "/dead-letters");
    expect(refused.status).toBe(401);
    expect(refused.headers.get("set-cookie")).toBeNull();
    expect(await refused.text()).toContain("does not match");
    const posted = await signIn(TOKEN, "/dead-letters");
    expect(posted.status).toBe(303);
    expect(posted.headers.get("location")).toBe("/dead-letters");
    const postedCookie = posted.headers.get("set-cookie")?.split(";")[0] as string;
    expect((await get("/dead-letters", { cookie: postedCookie })).body).toContain("retry");
    expect((await signIn(TOKEN, "//evil.example")).headers.get("location")).toBe("/");

    // The sign-in URL the runtime logs still works: the token leaves the URL at once.
    const wrong = await get("/sign-in?next=%2Fdead-letters&token=wrong");
    expect(wrong.body).toContain("does not match");
    const right = await fetch(`${dashboard.url}/sign-in?next=%2Fdead-letters&token=${TOKEN}`, { redirect: "manual" });
    expect(right.status).toBe(303);
    expect(right.headers.get("location")).toBe("/sign-in?next=%2Fdead-letters");
    const cookie = right.headers.get("set-cookie")?.split(";")[0] as string;
    const back = await fetch(`${dashboard.url}/sign-in?next=%2Fdead-letters`, {
      headers: { cookie },
      redirect: "manual",
    });
    expect(back.status).toBe(303);
    expect(back.headers.get("location")).toBe("/dead-letters");
    // Never onward to another site.
    const away = await fetch(`${dashboard.url}/sign-in?next=%2F%2Fevil.example`, {
      headers: { cookie },
      redirect: "manual",
    });
    expect(away.headers.get("location")).toBe("/");
  });

  it("retries every dead job of a function, as `jetfn retry --function --all` does", async () => {
    const dead = await Promise.all([1, 2, 3].map((n) => client.enqueue("non-retryable", { customer: `c${n}` })));
    for (const job of dead) await eventually(async () => (await client.status(job.id)).status === "dead");
    const retried = await post("/dead-letters/retry-all?function=non-retryable", SIGNED_IN);
    expect(retried.status).toBe(303);
    const message = new URL(retried.headers.get("location") ?? "", dashboard.url).searchParams.get("message");
    expect(message).toMatch(/retried \d+ dead job\(s\) of non-retryable/);
    for (const job of dead) {
      await eventually(async () => (await client.status(job.id)).retriedAs);
    }
    const none = await post("/dead-letters/retry-all", SIGNED_IN);
    expect(none.status).toBe(400);
  });
});
