import { hostname, networkInterfaces } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Dashboard, startDashboard } from "../../runtime/dashboard/server";
import type { Runtime } from "../../runtime/runtime";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";
import { httpRequest } from "../helpers/http-request";
import { stopWhenTestEnds } from "../helpers/test-scope";

// DNS rebinding: a page on attacker.example makes its name resolve to 127.0.0.1, then reads the
// dashboard "same-origin". Loopback reads need no token, so only the Host header tells such a
// request apart: the dashboard answers only to the names it serves.
const SECRET = "rebinding-secret-input";
let env: TestEnvironment;
let runtime: Runtime;
let dashboard: Dashboard;
let jobId: string;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  runtime = await env.startRuntime();
  dashboard = await startDashboard({ runtime, port: 0, token: "host-header-token-0123" });
  const client = await env.client();
  const job = await client.enqueue("insert-item", { name: SECRET });
  await client.result(job.id, { timeout: "30s" });
  jobId = job.id;
}, 90_000);

afterAll(async () => {
  await dashboard?.close();
  await env?.close();
});

const port = () => new URL(dashboard.url).port;
const pages = () => ["/audit", `/invocations/${jobId}`, "/api/functions", "/invocations", "/"];

describe("a dashboard on 127.0.0.1", () => {
  it.each(["attacker.example", "attacker.example:PORT", "127.0.0.1.attacker.example:PORT", "127.0.0.1:1"])(
    "refuses reads for Host %s",
    async (hostTemplate) => {
      const host = hostTemplate.replace("PORT", port());
      for (const page of pages()) {
        const answer = await httpRequest(`${dashboard.url}${page}`, { headers: { host } });
        expect({ page, status: answer.status }).toEqual({ page, status: 421 });
        expect(answer.body).not.toContain(SECRET);
        expect(answer.body).toContain("Host");
      }
    },
  );

  it("refuses the sign-in URL for a foreign Host (no cookie is set for it)", async () => {
    const answer = await httpRequest(`${dashboard.url}/?token=host-header-token-0123`, {
      headers: { host: `attacker.example:${port()}` },
    });
    expect(answer.status).toBe(421);
    expect(answer.headers["set-cookie"]).toBeUndefined();
  });

  it.each(["127.0.0.1:PORT", "localhost:PORT", "LOCALHOST:PORT", "[::1]:PORT"])(
    "serves reads for Host %s",
    async (hostTemplate) => {
      const host = hostTemplate.replace("PORT", port());
      const audit = await httpRequest(`${dashboard.url}/audit`, { headers: { host } });
      expect(audit.status).toBe(200);
      expect(audit.body).toContain(SECRET);
      const invocation = await httpRequest(`${dashboard.url}/invocations/${jobId}`, { headers: { host } });
      expect(invocation.status).toBe(200);
      expect(invocation.body).toContain(SECRET);
    },
  );
});

describe("a dashboard on another address", () => {
  it("on the IPv6 loopback [::1] serves its own literal and localhost, not a rebound name", async () => {
    const ipv6 = await startDashboard({ runtime, port: 0, host: "::1" });
    stopWhenTestEnds(() => ipv6.close());
    expect(ipv6.url).toMatch(/^http:\/\/\[::1\]:\d+$/);
    const ipv6Port = new URL(ipv6.url).port;
    for (const host of [`[::1]:${ipv6Port}`, `localhost:${ipv6Port}`]) {
      const answer = await httpRequest(`${ipv6.url}/audit`, { headers: { host } });
      expect({ host, status: answer.status }).toEqual({ host, status: 200 });
    }
    const rebound = await httpRequest(`${ipv6.url}/audit`, { headers: { host: `attacker.example:${ipv6Port}` } });
    expect(rebound.status).toBe(421);
  });

  it("on every interface (0.0.0.0) serves the machine's addresses and name, not a rebound name", async () => {
    const everywhere = await startDashboard({ runtime, port: 0, host: "0.0.0.0", token: "wildcard-token-0123456789" });
    stopWhenTestEnds(() => everywhere.close());
    const wildcardPort = new URL(everywhere.url).port;
    const addresses = Object.values(networkInterfaces())
      .flat()
      .filter((address) => address?.family === "IPv4")
      .map((address) => address?.address as string);
    const headers = (host: string) => ({ host, authorization: "Bearer wildcard-token-0123456789" });
    for (const name of ["0.0.0.0", "localhost", hostname(), ...addresses]) {
      const host = `${name}:${wildcardPort}`;
      const answer = await httpRequest(`http://127.0.0.1:${wildcardPort}/audit`, { headers: headers(host) });
      expect({ host, status: answer.status }).toEqual({ host, status: 200 });
    }
    const host = `attacker.example:${wildcardPort}`;
    const rebound = await httpRequest(`http://127.0.0.1:${wildcardPort}/audit`, { headers: headers(host) });
    expect(rebound.status).toBe(421);
  });

  it("behind a proxy serves the names it is given, with or without a port", async () => {
    const proxied = await startDashboard({
      runtime,
      port: 0,
      token: "proxy-token-0123456789",
      allowedHosts: ["dash.example.com", "ops.example.com:8443"],
    });
    stopWhenTestEnds(() => proxied.close());
    const headers = (host: string) => ({ host, authorization: "Bearer proxy-token-0123456789" });
    for (const host of ["dash.example.com", "dash.example.com:443", "ops.example.com:8443"]) {
      const answer = await httpRequest(`${proxied.url}/audit`, { headers: headers(host) });
      expect({ host, status: answer.status }).toEqual({ host, status: 200 });
    }
    for (const host of ["ops.example.com", "attacker.example"]) {
      const answer = await httpRequest(`${proxied.url}/audit`, { headers: headers(host) });
      expect({ host, status: answer.status }).toEqual({ host, status: 421 });
    }
  });

  it("refuses to start with an allowed host that is not a host name", async () => {
    await expect(startDashboard({ runtime, port: 0, allowedHosts: ["http://dash.example.com/"] })).rejects.toThrow(
      /JETFN_DASHBOARD_HOSTS/,
    );
  });
});
