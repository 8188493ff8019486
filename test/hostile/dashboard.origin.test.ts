import { afterAll, beforeAll, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { httpRequest } from "../helpers/http-request";

// Cross-site request forgery: a signed-in browser sends its token cookie with any request to the
// dashboard's host, whatever page made it. SameSite=Strict keeps it from other sites, but not from
// another port of the same host (localhost:3000 is the same site as localhost:4280), so a state-
// changing request must come from the dashboard's own pages: Origin and Sec-Fetch-Site say so.
const TOKEN = "origin-token-0123456789";
let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;

beforeAll(async () => {
  env = await createTestEnvironment();
  const runtime = await env.startRuntime();
  client = await env.client();
  dashboard = await startDashboard({ runtime, port: 0, token: TOKEN });
}, 90_000);

afterAll(async () => {
  await dashboard?.close();
  await env?.close();
});

async function deadJob(): Promise<string> {
  const job = await client.enqueue("boom", { reason: "dead on purpose" });
  await eventually(async () => (await client.status(job.id)).status === "dead", 30_000);
  return job.id;
}

function post(path: string, headers: Record<string, string>) {
  return httpRequest(`${dashboard.url}${path}`, {
    method: "POST",
    headers: { host: new URL(dashboard.url).host, cookie: `jetfn_token=${TOKEN}`, ...headers },
  });
}

it.each([
  { origin: "http://attacker.example" },
  { origin: "http://localhost:3000" },
  { origin: "http://127.0.0.1:1" },
  { origin: "null" },
  { "sec-fetch-site": "cross-site" },
  { "sec-fetch-site": "same-site" },
  { origin: "http://ORIGIN", "sec-fetch-site": "same-site" },
])("refuses a signed-in POST with %o, and nothing is dropped", { timeout: 60_000 }, async (forged) => {
  const id = await deadJob();
  const headers = Object.fromEntries(
    Object.entries(forged).map(([name, value]) => [name, value.replace("ORIGIN", new URL(dashboard.url).host)]),
  );
  const answer = await post(`/dead-letters/${id}/drop`, headers);
  expect(answer.status).toBe(403);
  expect(answer.body).toMatch(/another site/);
  const retried = await post(`/dead-letters/${id}/retry`, headers);
  expect(retried.status).toBe(403);
  expect((await client.status(id)).status).toBe("dead");
  const retriedAll = await post("/dead-letters/retry-all?function=boom", headers);
  expect(retriedAll.status).toBe(403);
  expect((await client.status(id)).status).toBe("dead");
  const retries = await env.database.sql`select id from jetfn.invocations where retry_of = ${id}`;
  expect(retries).toHaveLength(0);
});

it("refuses a forged cancel of a job waiting to run", { timeout: 60_000 }, async () => {
  const later = await client.enqueue("add", { a: 1, b: 1 }, { delay: "1h" });
  const answer = await post(`/invocations/${later.id}/cancel`, { origin: "http://localhost:3000" });
  expect(answer.status).toBe(403);
  expect((await client.status(later.id)).status).toBe("scheduled");
});

it("accepts the dashboard's own form post, and a token sent without a browser's headers", async () => {
  const own = await deadJob();
  const fromPage = await post(`/dead-letters/${own}/drop`, {
    origin: dashboard.url,
    "sec-fetch-site": "same-origin",
  });
  expect(fromPage.status).toBe(303);
  expect(decodeURIComponent(String(fromPage.headers.location))).toContain(`dropped ${own}`);

  const scripted = await deadJob();
  const fromCurl = await httpRequest(`${dashboard.url}/dead-letters/${scripted}/drop`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  expect(fromCurl.status).toBe(303);
  expect(decodeURIComponent(String(fromCurl.headers.location))).toContain(`dropped ${scripted}`);
});

it("marks every page so it is not framed, sniffed, cached or named in a Referer to another site", async () => {
  const answer = await httpRequest(`${dashboard.url}/dead-letters`);
  expect(answer.status).toBe(200);
  expect(answer.headers).toMatchObject({
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
  });
  expect(answer.headers["content-security-policy"]).toContain("frame-ancestors 'none'");
});
