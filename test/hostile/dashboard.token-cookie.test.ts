import { afterAll, beforeAll, expect, it } from "vitest";
import { startDashboard } from "../../runtime/dashboard/server";
import type { Runtime } from "../../runtime/runtime";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";
import { httpRequest } from "../helpers/http-request";
import { stopWhenTestEnds } from "../helpers/test-scope";

// Any token an operator sets in JETFN_DASHBOARD_TOKEN signs a browser in: base64's "=", "+" and
// "/", and characters a cookie cannot hold raw, survive the sign-in URL, the cookie and its parsing.
let env: TestEnvironment;
let runtime: Runtime;

beforeAll(async () => {
  env = await createTestEnvironment();
  runtime = await env.startRuntime();
}, 90_000);

afterAll(async () => {
  await env?.close();
});

/** Drops a job that does not exist: the answer says whether the token was accepted (303) or not (401). */
function drop(url: string, headers: Record<string, string>) {
  return httpRequest(`${url}/dead-letters/no-such-job-0/drop`, { method: "POST", headers });
}

it.each(["a+b/c=d==", "k3y=v4lue=", "pass word;x=1,ü"])(
  "signs a browser in with the token %j and accepts its cookie",
  async (token) => {
    const dashboard = await startDashboard({ runtime, port: 0, token });
    stopWhenTestEnds(() => dashboard.close());
    const signIn = await httpRequest(dashboard.signInUrl);
    expect(signIn.status).toBe(303);
    expect(signIn.headers.location).toBe("/");
    const setCookie = signIn.headers["set-cookie"]?.[0] ?? "";
    const cookie = setCookie.split(";")[0] as string;
    expect(cookie.startsWith("jetfn_token=")).toBe(true);

    const accepted = await drop(dashboard.url, { cookie: `theme=dark; ${cookie}; other=x=y` });
    expect(accepted.status).toBe(303);
    expect(decodeURIComponent(String(accepted.headers.location))).toContain("could not drop no-such-job-0");
  },
);

it("accepts a token with '=' in a cookie written without encoding, and refuses a wrong or mangled one", async () => {
  const dashboard = await startDashboard({ runtime, port: 0, token: "k3y=v4lue=" });
  stopWhenTestEnds(() => dashboard.close());
  expect((await drop(dashboard.url, { cookie: "jetfn_token=k3y=v4lue=" })).status).toBe(303);
  expect((await drop(dashboard.url, { cookie: "jetfn_token=k3y" })).status).toBe(401);
  expect((await drop(dashboard.url, { cookie: "jetfn_token=k3y=v4lue=x" })).status).toBe(401);
  expect((await drop(dashboard.url, { cookie: "jetfn_token=%E0%A4%A" })).status).toBe(401);
  expect((await drop(dashboard.url, { cookie: "xjetfn_token=k3y=v4lue=" })).status).toBe(401);
});
