import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { launchChromium } from "../helpers/chromium";
import { eventually, type TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment } from "../helpers/items-environment";

// The charts and the function page in Chromium: hover readouts, live refresh, range switching.

let env: TestEnvironment;
let client: JetfnClient;
let dashboard: Dashboard;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  ({ env, client } = await createItemsEnvironment());
  const runtime = await env.startRuntime();
  dashboard = await startDashboard({ runtime, port: 0 });
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await dashboard?.close();
  await env?.close();
});

async function runJobs(fn: string, inputs: unknown[]): Promise<string[]> {
  const jobs = await Promise.all(inputs.map((input) => client.enqueue(fn, input)));
  for (const job of jobs)
    await eventually(async () => ["succeeded", "dead"].includes((await client.status(job.id)).status));
  return jobs.map((job) => job.id);
}

describe("the charts in a real browser", () => {
  it("label their axes and show a bucket's figures on hover", async () => {
    await runJobs(
      "add",
      Array.from({ length: 8 }, (_, a) => ({ a, b: 1 })),
    );
    await page.goto(`${dashboard.url}/functions/add?range=15m`);
    const throughput = page.locator("#chart-throughput");
    await throughput.waitFor();
    const labels = await throughput.locator(".axis.x text").allTextContents();
    expect(labels.filter((label) => /^\d\d:\d\d$/.test(label)).length).toBeGreaterThanOrEqual(4);
    expect(await throughput.locator("figcaption .legend").textContent()).toMatch(/succeeded\s*failed/);
    // The 8 jobs may straddle two 15-second buckets: hover the first that has any.
    await throughput.locator('rect.hit:not([data-tip*="succeeded 0 "])').first().hover();
    await expect
      .poll(() => throughput.locator(".readout").textContent())
      .toMatch(/UTC \+ 15 s: succeeded [1-8] · failed 0/);
    const duration = page.locator("#chart-duration");
    await duration.locator('rect.hit[data-tip*="p50"]:not([data-tip*="p50 –"])').first().hover();
    await expect.poll(() => duration.locator(".readout").textContent()).toMatch(/p50 [\d.]+ ms · p99 [\d.]+ ms/);
  });

  it("update live as jobs end, without reloading the page", async () => {
    await page.goto(`${dashboard.url}/functions/add?range=15m`);
    const total = page.locator(".total-attempts");
    const before = Number(await total.textContent());
    await page.evaluate(() => {
      (globalThis as unknown as { marker: boolean }).marker = true;
    });
    await runJobs("add", [
      { a: 100, b: 1 },
      { a: 101, b: 1 },
      { a: 102, b: 1 },
    ]);
    await runJobs("boom", [{ reason: "seen live" }]);
    await eventually(async () => Number(await total.textContent()) >= before + 3, 20_000);
    // boom's failure is not add's.
    expect(Number(await page.locator(".total-errors").textContent())).toBe(0);
    // The same document: the figures came through the fragment, not a reload.
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: boolean }).marker)).toBe(true);
  });

  it("switch range from the picker, and chart the whole deployment on the functions page", async () => {
    await page.goto(`${dashboard.url}/functions/add`);
    await page.locator('a[data-range="24h"]').click();
    await page.waitForURL(/range=24h/);
    expect(await page.locator("#chart-throughput rect.hit").count()).toBe(96);
    expect(await page.locator('a.active[data-range="24h"]').count()).toBe(1);
    await page.goto(dashboard.url);
    await page.locator("#chart-errors").waitFor();
    const errors = Number(await page.locator(".total-errors").textContent());
    expect(errors).toBeGreaterThanOrEqual(1);
  });
});

describe("the function page in a real browser", () => {
  it("shows settings, live figures, recent invocations and errors grouped by message", async () => {
    const ids = await runJobs("boom", [{ reason: "quota" }, { reason: "quota" }, { reason: "<b>bold</b>" }]);
    await page.goto(`${dashboard.url}/functions/boom`);
    expect(await page.locator('#settings tr[data-setting="retry"] td').textContent()).toBe("1 attempt(s)");
    expect(await page.locator('#now [data-figure="instances"] dd').textContent()).toBe("1");
    for (const id of ids) await page.locator(`#recent a[href="/invocations/${id}"]`).waitFor();
    const quota = page.locator("#error-groups tr", { hasText: "boom: quota" });
    expect(await quota.locator("td.num").textContent()).toBe("2");
    // An error message is text, never markup.
    expect(await page.locator("#error-groups td.message", { hasText: "<b>bold</b>" }).count()).toBe(1);
    expect(await page.locator("#error-groups b").count()).toBe(0);
    await page.locator("#error-groups a").first().click();
    await page.waitForURL(/\/invocations\//);
  });
});

describe("the invocations list in a real browser", () => {
  it("shows a bad filter's reason above the form, which keeps it to correct", async () => {
    await runJobs("add", [{ a: 7, b: 7 }]);
    const response = await page.goto(`${dashboard.url}/invocations?since=banana&function=add`);
    expect(response?.status()).toBe(400);
    expect(await page.locator(".filter-error").textContent()).toContain('"banana" is neither a duration');
    expect(await page.locator('input[name="function"]').inputValue()).toBe("add");
    await page.locator('input[name="since"]').fill("1h");
    await page.locator("form.filters button").click();
    await page.waitForURL(/since=1h/);
    expect(await page.locator(".filter-error").count()).toBe(0);
    expect(await page.locator("#invocations tbody tr").count()).toBeGreaterThanOrEqual(1);
  });
});
