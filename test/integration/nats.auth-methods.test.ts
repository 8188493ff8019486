// NATS authentication beyond user and password, each against a nats-server configured for it: a
// token, an NKey, a credentials file (operator mode: user JWT and seed) and TLS with client
// certificates (the checked-in deploy/production/nats-tls.conf). For each: a runtime connects with the
// settings jetfn reads from NATS_TOKEN, NATS_NKEY, NATS_CREDS, NATS_CA/NATS_CERT/NATS_KEY and
// answers a client with the same settings, and a connection without them is refused.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createUser } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import type { RuntimeOptions } from "../../runtime/config";
import type { NatsAuth } from "../../runtime/nats/nats-auth";
import { type ClientOptions, createClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment } from "../helpers/environment";
import { createOperatorSetup } from "../helpers/nats-jwt";
import { stopWhenTestEnds } from "../helpers/test-scope";
import { createTestCertificates } from "../helpers/tls-certificates";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const dir = mkdtempSync(path.join(tmpdir(), "jetfn-nats-auth-"));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

type AuthOptions = Pick<
  RuntimeOptions & ClientOptions,
  "natsToken" | "natsNkeyFile" | "natsCredsFile" | "natsCaFile" | "natsCertFile" | "natsKeyFile"
>;

/** The same settings as jetfn's resolved NatsAuth, for the test server's readiness probe. */
function probeAuth(options: AuthOptions): NatsAuth {
  return {
    token: options.natsToken,
    nkeyFile: options.natsNkeyFile,
    credsFile: options.natsCredsFile,
    caFile: options.natsCaFile,
    certFile: options.natsCertFile,
    keyFile: options.natsKeyFile,
  };
}

/** Starts a server with `config`, a runtime and a client with `options`; checks a call and a job. */
async function serveWith(config: string, options: AuthOptions): Promise<string> {
  const env = await createTestEnvironment({ config, auth: probeAuth(options) });
  stopWhenTestEnds(() => env.close());
  const runtime = await env.startRuntime(options);
  const client = await createClient({ natsUrl: env.nats.url, ...options });
  stopWhenTestEnds(() => client.close());
  expect(await client.call("add", { a: 20, b: 22 })).toEqual({ sum: 42 });
  expect(runtime.logs.lines.filter((line) => Number(line.level) >= 50)).toEqual([]);
  return env.nats.url;
}

async function refused(url: string, options: Parameters<typeof connect>[0] = {}): Promise<string> {
  const connection = await connect({ servers: url, reconnect: false, timeout: 2_000, ...options }).catch(
    (error: Error) => error,
  );
  if (!(connection instanceof Error)) {
    await connection.close();
    return "connected";
  }
  return connection.message;
}

describe("NATS authentication", () => {
  it("by token (NATS_TOKEN)", async () => {
    const url = await serveWith('authorization { token: "t0ken-for-jetfn" }', { natsToken: "t0ken-for-jetfn" });
    expect(await refused(url, { token: "wrong" })).toMatch(/Authorization Violation/i);
  });

  it("by NKey seed file (NATS_NKEY)", async () => {
    const user = createUser();
    const seedFile = path.join(dir, "user.nk");
    writeFileSync(seedFile, `${new TextDecoder().decode(user.getSeed())}\n`, { mode: 0o600 });
    const config = `authorization { users: [ { nkey: ${user.getPublicKey()} } ] }`;
    const url = await serveWith(config, { natsNkeyFile: seedFile });
    expect(await refused(url)).toMatch(/Authorization Violation/i);
  });

  it("by credentials file (NATS_CREDS), on an operator-mode server", async () => {
    const setup = createOperatorSetup();
    const credsFile = path.join(dir, "user.creds");
    writeFileSync(credsFile, setup.creds, { mode: 0o600 });
    const url = await serveWith(setup.serverConfig, { natsCredsFile: credsFile });
    expect(await refused(url)).toMatch(/Authorization Violation/i);
    // The CLI reads the same variable the nats CLI does.
    const call = await runCli(["call", "add", '{"a": 1, "b": 2}'], { NATS_URL: url, NATS_CREDS: credsFile });
    expect(call).toMatchObject({ code: 0, stdout: expect.stringContaining('"sum":3') });
  });

  it("by TLS client certificate (NATS_CA, NATS_CERT, NATS_KEY) with deploy/production/nats-tls.conf", async () => {
    const certificates = createTestCertificates(dir);
    const config = [
      `NATS_TLS_SERVER_CERT: "${certificates.serverCert}"`,
      `NATS_TLS_SERVER_KEY: "${certificates.serverKey}"`,
      `NATS_TLS_CA: "${certificates.ca}"`,
      readFileSync(path.join(ROOT, "deploy/production/nats-tls.conf"), "utf8"),
    ].join("\n");
    const url = await serveWith(config, {
      natsCaFile: certificates.ca,
      natsCertFile: certificates.clientCert,
      natsKeyFile: certificates.clientKey,
    });
    // Trusting the server is not enough: the server wants a certificate from its CA.
    expect(await refused(url, { tls: { caFile: certificates.ca } })).not.toBe("connected");
    expect(await refused(url)).not.toBe("connected");
  });
});
