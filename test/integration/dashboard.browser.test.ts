import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { launchChromium } from "../helpers/chromium";
import { eventually, type TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment } from "../helpers/items-environment";

// The dashboard on the test fixtures. The docs' screenshots are taken of the shipped examples
// instead, by dashboard.screenshots.test.ts.
let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  ({ env, client } = await createItemsEnvironment());
  const runtime = await env.startRuntime();
  dashboard = await startDashboard({ runtime, port: 0, token: "test-token-0123456789" });
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await dashboard?.close();
  await env?.close();
});

describe("the dashboard in a real browser", () => {
  it("lists deployed functions with their numbers, updating live", async () => {
    await client.call("add", { a: 1, b: 2 });
    await page.goto(dashboard.url);
    await page.locator('tr[data-function="add"]').waitFor();
    const served = page.locator('tr[data-function="add"] td.served');
    const before = Number(await served.textContent());
    await Promise.all([client.call("add", { a: 2, b: 2 }), client.call("add", { a: 3, b: 2 })]);
    await eventually(async () => Number(await served.textContent()) >= before + 2);
    await page.goto(`${dashboard.url}/functions/add`);
    expect(await page.locator("#chart-throughput rect.hit").count()).toBe(60);
  });

  it("shows a job's progress updating live, then its result", async () => {
    const job = await client.enqueue("progress", { steps: 12, stepMs: 250 });
    await page.goto(`${dashboard.url}/invocations/${job.id}`);
    const progress = page.locator(".progress");
    await progress.waitFor({ timeout: 10_000 });
    const first = await progress.textContent();
    await eventually(async () => (await progress.textContent()) !== first);
    await page.locator(".status-succeeded").waitFor({ timeout: 15_000 });
    await page.locator("pre.result").waitFor();
    expect(await page.locator("pre.result").textContent()).toContain('"steps": 12');
    expect(await page.locator("pre.input").textContent()).toContain('"stepMs": 250');
  });

  it("shows in the audit view a change a function made", async () => {
    const job = await client.enqueue("insert-item", { name: "seen-in-browser" });
    await client.result(job.id);
    await page.goto(`${dashboard.url}/audit?function=insert-item`);
    const row = page.locator("#audit tbody tr", { hasText: "seen-in-browser" });
    await row.waitFor();
    expect(await row.textContent()).toContain("INSERT items");
    await page.goto(`${dashboard.url}/invocations/${job.id}`);
    expect(await page.locator("table.changes").textContent()).toContain("seen-in-browser");
    await page.goto(`${dashboard.url}/audit?function=insert-item`);
  });

  it("shows a sign-in hint instead of actions, signs in through the form, and retries all dead jobs of a function", async () => {
    const dead = await Promise.all(["first", "second"].map((reason) => client.enqueue("boom", { reason })));
    for (const job of dead) await eventually(async () => (await client.status(job.id)).status === "dead");
    // A browser that never signed in (its own cookies).
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const fresh = await context.newPage();
      await fresh.goto(`${dashboard.url}/dead-letters?function=boom`);
      await fresh.locator(`tr[data-id="${dead[0]?.id}"]`).waitFor();
      expect(await fresh.locator("button.retry, button.drop, button.retry-all").count()).toBe(0);
      await fresh.locator("p.signin a.sign-in").click();
      await fresh.locator('input[name="token"]').fill("test-token-0123456789");
      await fresh.locator("form button", { hasText: "sign in" }).click();
      await fresh.waitForURL(`${dashboard.url}/dead-letters?function=boom`);
      fresh.once("dialog", (dialog) => void dialog.accept());
      await fresh.locator("button.retry-all").click();
      await fresh.locator(".notice", { hasText: /retried \d+ dead job\(s\) of boom/ }).waitFor();
      for (const job of dead) await eventually(async () => (await client.status(job.id)).retriedAs);
    } finally {
      await context.close();
    }
  });

  it("retries a dead job from the dead-letter view, after confirmation and with the token", async () => {
    const job = await client.enqueue("boom", { reason: "retry me" });
    await eventually(async () => (await client.status(job.id)).status === "dead");
    // Without the token, actions are refused.
    const refused = await page.request.post(`${dashboard.url}/dead-letters/${job.id}/retry`);
    expect(refused.status()).toBe(401);

    await page.goto(`${dashboard.url}/?token=test-token-0123456789`);
    await page.goto(`${dashboard.url}/dead-letters`);
    const row = page.locator(`tr[data-id="${job.id}"]`);
    await row.waitFor();
    page.once("dialog", (dialog) => void dialog.accept());
    await row.locator("button.retry").click();
    await page.locator(".notice", { hasText: `retried ${job.id}` }).waitFor();
    const retried = await eventually(async () => {
      const [found] = await env.database.sql`select id, attempts from jetfn.invocations where retry_of = ${job.id}`;
      return found;
    });
    // boom always fails: the retry ran its one attempt and is dead again, linked to the original.
    expect(retried).toMatchObject({ attempts: 1 });
  });
});
