import { afterAll, beforeAll, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";

// Open redirect: the sign-in page returns to `next` once the browser is signed in. A link to the
// dashboard's real sign-in page with a `next` of another site would lend the dashboard's name to a
// phishing page, so `next` may only name a path of the dashboard.
const TOKEN = "redirect-token-0123456789";
let env: TestEnvironment;
let dashboard: Dashboard;

beforeAll(async () => {
  env = await createTestEnvironment();
  dashboard = await startDashboard({ runtime: await env.startRuntime(), port: 0, token: TOKEN });
}, 60_000);

afterAll(async () => {
  await dashboard?.close();
  await env?.close();
});

it.each([
  "//evil.example/",
  "https://evil.example/",
  "/\\evil.example",
  "\\\\evil.example",
  "javascript:alert(1)",
  "http://dashboard/",
])("sends a signed-in browser asked to go on to %s to the dashboard's own front page", async (next) => {
  const answer = await fetch(`${dashboard.url}/sign-in?next=${encodeURIComponent(next)}`, {
    headers: { cookie: `jetfn_token=${TOKEN}` },
    redirect: "manual",
  });
  expect(answer.status).toBe(303);
  expect(answer.headers.get("location")).toBe("/");
});

it("sets no cookie for a wrong token, and says so on the page", async () => {
  const answer = await fetch(`${dashboard.url}/sign-in?next=%2F&token=wrong`, { redirect: "manual" });
  expect(answer.status).toBe(200);
  expect(answer.headers.get("set-cookie")).toBeNull();
  expect(await answer.text()).toContain("does not match");
});
