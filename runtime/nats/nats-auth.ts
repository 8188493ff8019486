import { readFile } from "node:fs/promises";
import { credsAuthenticator, type NodeConnectionOptions, nkeyAuthenticator } from "@nats-io/transport-node";
import { JetfnError } from "../support/errors";

/**
 * How jetfn authenticates to NATS, as the `nats` CLI takes it from the environment: `NATS_USER` and
 * `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS` (a credentials file: user JWT and NKey seed),
 * `NATS_NKEY` (a file holding an NKey seed), and TLS with `NATS_CA`, `NATS_CERT`, `NATS_KEY` (PEM
 * files). One way of naming the user at most; TLS goes with any of them.
 */
export interface NatsAuth {
  readonly user?: string | undefined;
  readonly password?: string | undefined;
  readonly token?: string | undefined;
  readonly credsFile?: string | undefined;
  readonly nkeyFile?: string | undefined;
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

/** Refuses settings that cannot work together, naming the variables; returns them frozen. */
export function checkNatsAuth(auth: NatsAuth): NatsAuth {
  const identities = (
    [
      ["NATS_USER", auth.user],
      ["NATS_TOKEN", auth.token],
      ["NATS_CREDS", auth.credsFile],
      ["NATS_NKEY", auth.nkeyFile],
    ] as const
  ).filter(([, value]) => value !== undefined);
  if (identities.length > 1) {
    const names = identities.map(([name]) => name).join(" and ");
    throw new JetfnError("E_CONFIG_INVALID", `${names} are both set; NATS takes one way of naming the user`);
  }
  if ((auth.certFile === undefined) !== (auth.keyFile === undefined)) {
    throw new JetfnError("E_CONFIG_INVALID", "NATS_CERT and NATS_KEY go together: set both, or neither");
  }
  return Object.freeze({ ...auth });
}

/** The nats.js connection options for `auth`, reading the credentials and NKey files it names. */
export async function natsAuthOptions(auth: NatsAuth = {}): Promise<Partial<NodeConnectionOptions>> {
  const options: Partial<NodeConnectionOptions> = {};
  if (auth.user !== undefined) Object.assign(options, { user: auth.user, pass: auth.password });
  if (auth.token !== undefined) options.token = auth.token;
  if (auth.credsFile !== undefined) {
    options.authenticator = credsAuthenticator(await readSecret("NATS_CREDS", auth.credsFile));
  }
  if (auth.nkeyFile !== undefined) options.authenticator = nkeyAuthenticator(await readSeed(auth.nkeyFile));
  if (auth.caFile !== undefined || auth.certFile !== undefined) {
    // nats.js reads these files itself, and then insists on TLS with the server.
    options.tls = { caFile: auth.caFile, certFile: auth.certFile, keyFile: auth.keyFile };
  }
  return options;
}

async function readSeed(file: string): Promise<Uint8Array> {
  const seed = new TextDecoder().decode(await readSecret("NATS_NKEY", file)).trim();
  // A user seed: an account or operator seed would be refused by the server with a vaguer error.
  if (!seed.startsWith("SU")) {
    throw new JetfnError("E_CONFIG_INVALID", `NATS_NKEY: ${file} does not hold a user NKey seed (SU...)`);
  }
  return new TextEncoder().encode(seed);
}

async function readSecret(variable: string, file: string): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch (error) {
    throw new JetfnError("E_CONFIG_INVALID", `${variable}: cannot read ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
