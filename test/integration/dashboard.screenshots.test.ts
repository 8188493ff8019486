// The dashboard serving the shipped example functions (functions/), in Chromium: every page shows
// them, and with UPDATE_SCREENSHOTS=1 the pages are saved as the docs' screenshots
// (docs/screenshots/), so the pictures a reader sees are of the examples the quickstart runs, not
// of test fixtures. docs/dashboard.md says how to remake them.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { launchChromium } from "../helpers/chromium";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const EXAMPLES = path.join(ROOT, "functions");
const SCREENSHOTS = path.join(ROOT, "docs/screenshots");
const TOKEN = "screenshot-token-0123456789";

const SHIPPED = [
  "blog.add-comment",
  "blog.count-comments",
  "blog.notify-subscribers",
  "factorial",
  "memory-cache",
  "primes.is-prime",
  "primes.primes-among",
  "primes.sieve",
  "send-mail",
];

let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`insert into posts (id, title) values (1, 'Background tasks, revisited')`;
  await env.database.sql`
    insert into post_subscribers (post_id, email) values (1, 'ada@example.com'), (1, 'grace@example.com')`;
  const runtime = await env.startRuntime({ functionsDir: EXAMPLES });
  client = await env.client();
  dashboard = await startDashboard({ runtime, port: 0, token: TOKEN });
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await dashboard?.close();
  await env?.close();
});

const JOBS_PER_WAVE = 30;

/**
 * Jobs of primes.is-prime, with a few inputs it refuses (failed attempts), so the charts have
 * something to show. For the docs' pictures they come in waves 15 s apart (one chart bucket of
 * the 15-minute range each); as an ordinary test, in one wave.
 */
async function enqueueWaves(): Promise<void> {
  const waves = process.env.UPDATE_SCREENSHOTS ? 4 : 1;
  for (let wave = 0; wave < waves; wave++) {
    if (wave > 0) await new Promise((resolve) => setTimeout(resolve, 15_000));
    const inputs = Array.from({ length: JOBS_PER_WAVE }, (_, index) => ({ n: 1_000 * wave + index * 7 }));
    const jobs = await Promise.all([
      ...inputs.map((input) => client.enqueue("primes.is-prime", input)),
      ...Array.from({ length: wave + 1 }, () => client.enqueue("primes.is-prime", { n: -1 })),
    ]);
    for (const job of jobs) {
      await eventually(async () => ["succeeded", "dead"].includes((await client.status(job.id)).status));
    }
  }
}

async function screenshot(name: string): Promise<void> {
  if (!process.env.UPDATE_SCREENSHOTS) return;
  await mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

describe("the dashboard with the shipped example functions", () => {
  it("lists the examples with their numbers, and charts one of them", async () => {
    for (let n = 90; n < 130; n++) await client.call("primes.is-prime", { n });
    await client.call("primes.sieve", { from: 1000, to: 2000 });
    await client.call("primes.primes-among", { numbers: [1, 2, 9, 97, 100, 7919] });
    await client.call("memory-cache", { action: "put", key: "feed", value: { items: [1, 2] } });
    await client.call("memory-cache", { action: "get", key: "feed" });
    await client.enqueueAndWait("factorial", { n: 20 });
    await enqueueWaves();
    await client.enqueueAndWait("send-mail", { to: ["ada@example.com", "linus@example.com"], subject: "Welcome" });
    // Two comments: the listeners mail the post's other subscribers (2, then 1), and the count goes
    // 1 -> 2 (an UPDATE, shown with its diff in the audit view).
    await client.enqueueAndWait("blog.add-comment", { postId: 1, author: "linus@example.com", body: "Nice write-up." });
    await client.enqueueAndWait("blog.add-comment", { postId: 1, author: "ada@example.com", body: "Thanks!" });
    await eventually(async () => {
      const [counted] = await env.database.sql`select count from comment_counts where post_id = 1`;
      const mailed = await env.database.sql`select 1 from sent_mail where subject like 'New comment on%'`;
      return counted?.count === 2 && mailed.length === 3;
    });

    await page.goto(dashboard.url);
    for (const name of SHIPPED) await page.locator(`tr[data-function="${name}"]`).waitFor();
    const served = page.locator('tr[data-function="primes.is-prime"] td.served');
    await eventually(async () => Number(await served.textContent()) >= 40);
    const listed = await page
      .locator("tr[data-function]")
      .evaluateAll((rows) => rows.map((row) => row.getAttribute("data-function")));
    expect([...listed].sort()).toEqual(SHIPPED);

    await page.goto(`${dashboard.url}/?range=15m`);
    await page.locator("#chart-throughput").waitFor();
    expect(Number(await page.locator(".total-attempts").textContent())).toBeGreaterThanOrEqual(JOBS_PER_WAVE);
    await screenshot("functions");

    await page.goto(`${dashboard.url}/functions/primes.is-prime?range=15m`);
    await page.locator('#settings tr[data-setting="retry"]').waitFor();
    expect(Number(await page.locator(".total-errors").textContent())).toBeGreaterThanOrEqual(1);
    await page.locator("#chart-throughput rect.hit:not([data-tip*='succeeded 0 '])").last().hover();
    await screenshot("function-page");
  }, 120_000);

  it("shows factorial's progress updating live", async () => {
    const job = await client.enqueue("factorial", { n: 24, stepDelayMs: 150 });
    await page.goto(`${dashboard.url}/invocations/${job.id}`);
    const progress = page.locator(".progress");
    await progress.waitFor({ timeout: 10_000 });
    const first = await progress.textContent();
    await eventually(async () => (await progress.textContent()) !== first);
    await screenshot("invocation-running");
    await page.locator(".status-succeeded").waitFor({ timeout: 30_000 });
  });

  it("shows in the audit log what the blog example and its listeners wrote", async () => {
    await page.goto(`${dashboard.url}/audit`);
    for (const name of ["blog.add-comment", "blog.count-comments", "blog.notify-subscribers"]) {
      await page.locator("#audit tbody tr", { hasText: name }).first().waitFor();
    }
    await screenshot("audit");
  });

  it("lists dead jobs of the examples", async () => {
    const dead = await Promise.all([
      client.enqueue("send-mail", { to: ["not-an-address"], subject: "Hi" }),
      client.enqueue("factorial", { n: 100_000 }),
      client.enqueue("blog.add-comment", { postId: 999, author: "grace@example.com", body: "Hello?" }),
    ]);
    for (const job of dead) {
      await eventually(async () => (await client.status(job.id)).status === "dead", 20_000);
    }
    // The refused inputs enqueued for the charts are dropped, as an operator would, so the picture
    // shows one dead job of each kind.
    const refused = await env.database.sql`
      select id from jetfn.invocations where function = 'primes.is-prime' and status = 'dead'`;
    for (const row of refused) await client.dropDeadLetter(row.id as string);
    await page.goto(`${dashboard.url}/?token=${TOKEN}`);
    await page.goto(`${dashboard.url}/dead-letters`);
    for (const job of dead) await page.locator(`tr[data-id="${job.id}"]`).waitFor();
    expect(await page.locator("tr[data-id]").count()).toBe(dead.length);
    await screenshot("dead-letters");
  });
});
