import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { launchChromium } from "../helpers/chromium";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { stopWhenTestEnds } from "../helpers/test-scope";

// The dashboard's attackers, in a real browser: a page whose name resolves to 127.0.0.1 (DNS
// rebinding, simulated by Chromium's resolver rules), and a page on another port of 127.0.0.1.
const TOKEN = "same-site-token-0123456789";
let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;
let browser: Browser;

beforeAll(async () => {
  env = await createTestEnvironment();
  const runtime = await env.startRuntime();
  client = await env.client();
  dashboard = await startDashboard({ runtime, port: 0, token: TOKEN });
  browser = await launchChromium(["--host-resolver-rules=MAP attacker.example 127.0.0.1"]);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await dashboard?.close();
  await env?.close();
});

/** A page on another port of 127.0.0.1 that posts a form to `action` as soon as it loads. */
async function servePostingPage(action: string): Promise<string> {
  const server: Server = createServer((_request, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(`<form method="post" action="${action}"></form><script>document.forms[0].submit()</script>`);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  stopWhenTestEnds(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

it("shows no invocation or audit row to a page whose name was rebound to 127.0.0.1", async () => {
  const job = await client.enqueue("boom", { reason: "rebinding-secret" });
  await eventually(async () => (await client.status(job.id)).status === "dead", 30_000);
  const page = await browser.newPage();
  stopWhenTestEnds(() => page.close());
  const rebound = dashboard.url.replace("127.0.0.1", "attacker.example");
  for (const path of [`/invocations/${job.id}`, "/audit", "/dead-letters"]) {
    const answer = await page.goto(`${rebound}${path}`);
    expect({ path, status: answer?.status() }).toEqual({ path, status: 421 });
    expect(await page.content()).not.toContain("rebinding-secret");
  }
  // The same page under the dashboard's own name shows it.
  await page.goto(`${dashboard.url}/invocations/${job.id}`);
  expect(await page.content()).toContain("rebinding-secret");
});

// Sites ignore ports: any other server on 127.0.0.1 (another project's dev server, a compromised
// tool) is the same site as the dashboard, so the browser sends the SameSite=Strict token cookie
// with a form that server's page posts to the dashboard.
it("refuses a retry that a page on another port posts with the signed-in browser's cookie", async () => {
  const job = await client.enqueue("boom", { reason: "forged retry" });
  await eventually(async () => (await client.status(job.id)).status === "dead", 30_000);
  const page = await browser.newPage();
  stopWhenTestEnds(() => page.close());
  await page.goto(dashboard.signInUrl);

  const answered = page.waitForResponse((response) => response.request().method() === "POST");
  await page.goto(await servePostingPage(`${dashboard.url}/dead-letters/${job.id}/retry`));
  const answer = await answered;
  expect(answer.status()).toBe(403);
  expect(await answer.text()).toMatch(/another site/);
  expect((await client.status(job.id)).status).toBe("dead");
  expect(await env.database.sql`select id from jetfn.invocations where retry_of = ${job.id}`).toHaveLength(0);
});
