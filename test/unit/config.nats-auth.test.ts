import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { handlerThreadEnvironment, resolveConfig } from "../../runtime/config";
import { natsAuthOptions } from "../../runtime/nats/nats-auth";

const dir = mkdtempSync(path.join(tmpdir(), "jetfn-nats-auth-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("reads the variables the nats CLI reads", () => {
  const env = {
    NATS_CREDS: "/run/user.creds",
    NATS_CA: "/etc/ca.pem",
    NATS_CERT: "/etc/c.pem",
    NATS_KEY: "/etc/c.key",
  };
  expect(resolveConfig({}, env).natsAuth).toEqual({
    user: undefined,
    password: undefined,
    token: undefined,
    credsFile: "/run/user.creds",
    nkeyFile: undefined,
    caFile: "/etc/ca.pem",
    certFile: "/etc/c.pem",
    keyFile: "/etc/c.key",
  });
  expect(resolveConfig({}, { NATS_TOKEN: "t", NATS_NKEY: "" }).natsAuth).toMatchObject({ token: "t" });
  expect(resolveConfig({ natsNkeyFile: "/a.nk" }, {}).natsAuth.nkeyFile).toBe("/a.nk");
  expect(Object.isFrozen(resolveConfig({}, {}).natsAuth)).toBe(true);
});

it.each([
  [{ NATS_USER: "u", NATS_TOKEN: "t" }, "NATS_USER and NATS_TOKEN are both set"],
  [{ NATS_CREDS: "/c", NATS_NKEY: "/n" }, "NATS_CREDS and NATS_NKEY are both set"],
  [{ NATS_CERT: "/c.pem" }, "NATS_CERT and NATS_KEY go together"],
])("refuses %o with E_CONFIG_INVALID", (env, message) => {
  expect(() => resolveConfig({}, env)).toThrow(
    expect.objectContaining({ code: "E_CONFIG_INVALID", message: expect.stringContaining(message) }),
  );
});

it("names the variable when a credentials or NKey file cannot be used", async () => {
  await expect(natsAuthOptions({ credsFile: path.join(dir, "missing.creds") })).rejects.toMatchObject({
    code: "E_CONFIG_INVALID",
    message: expect.stringMatching(/^NATS_CREDS: cannot read .*missing\.creds/),
  });
  const accountSeed = path.join(dir, "account.nk");
  writeFileSync(accountSeed, "SAAGNJOZTRPYGRDHKXDX7GJXRXJLCGAOVJGMNWIUEFRBLKZJFRQBTTC2PE\n");
  await expect(natsAuthOptions({ nkeyFile: accountSeed })).rejects.toMatchObject({
    code: "E_CONFIG_INVALID",
    message: expect.stringContaining("does not hold a user NKey seed"),
  });
});

it("gives nats.js TLS options only when a TLS file is named", async () => {
  expect(await natsAuthOptions({ user: "u", password: "p" })).toEqual({ user: "u", pass: "p" });
  expect(await natsAuthOptions({ caFile: "/ca.pem" })).toEqual({
    tls: { caFile: "/ca.pem", certFile: undefined, keyFile: undefined },
  });
});

it("withholds every NATS credential variable from handler threads", () => {
  const env = handlerThreadEnvironment({
    NATS_CREDS: "/c",
    NATS_TOKEN: "t",
    NATS_KEY: "/k",
    NATS_NKEY: "/n",
    HOME: "/h",
  });
  expect(env).toEqual({ HOME: "/h" });
});
