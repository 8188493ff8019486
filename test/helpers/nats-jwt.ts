import { randomBytes } from "node:crypto";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";

/** An operator-mode nats-server setup: its config lines and a user's credentials file. */
export interface OperatorSetup {
  /** `operator`, `system_account` and a memory resolver preloaded with the accounts. */
  serverConfig: string;
  /** A credentials file (user JWT and NKey seed) of a user of a JetStream-enabled account. */
  creds: string;
}

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };

/**
 * Mints an operator, a system account, an application account with JetStream and one user, as
 * `nsc` would (NATS JWTs are ed25519-nkey signed JWTs), so a test needs no `nsc` binary.
 */
export function createOperatorSetup(): OperatorSetup {
  const operator = createOperator();
  const system = createAccount();
  const account = createAccount();
  const user = createUser();
  const operatorJwt = encodeJwt(operator, operator.getPublicKey(), "jetfn-test", {
    type: "operator",
    version: 2,
    system_account: system.getPublicKey(),
  });
  const accountJwt = (subject: KeyPair, name: string, jetstream: boolean): string =>
    encodeJwt(operator, subject.getPublicKey(), name, {
      type: "account",
      version: 2,
      limits: { ...UNLIMITED, ...(jetstream ? { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } : {}) },
    });
  const userJwt = encodeJwt(account, user.getPublicKey(), "jetfn-runtime", {
    type: "user",
    version: 2,
    pub: {},
    sub: {},
    subs: -1,
    data: -1,
    payload: -1,
  });
  const serverConfig = [
    `operator: "${operatorJwt}"`,
    `system_account: "${system.getPublicKey()}"`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${system.getPublicKey()}: "${accountJwt(system, "SYS", false)}"`,
    `  ${account.getPublicKey()}: "${accountJwt(account, "JETFN", true)}"`,
    "}",
  ].join("\n");
  return { serverConfig, creds: credsFile(userJwt, new TextDecoder().decode(user.getSeed())) };
}

function encodeJwt(issuer: KeyPair, subject: string, name: string, nats: object): string {
  const header = base64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const claims = {
    jti: randomBytes(16).toString("hex").toUpperCase(),
    iat: Math.floor(Date.now() / 1_000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject,
    nats,
  };
  const payload = base64url(JSON.stringify(claims));
  const signature = base64url(issuer.sign(new TextEncoder().encode(`${header}.${payload}`)));
  return `${header}.${payload}.${signature}`;
}

function base64url(value: string | Uint8Array): string {
  return Buffer.from(value).toString("base64url");
}

/** The layout `nsc generate creds` writes. */
function credsFile(jwt: string, seed: string): string {
  return [
    "-----BEGIN NATS USER JWT-----",
    jwt,
    "------END NATS USER JWT------",
    "",
    "************************* IMPORTANT *************************",
    "NKEY Seed printed below can be used to sign and prove identity.",
    "",
    "-----BEGIN USER NKEY SEED-----",
    seed,
    "------END USER NKEY SEED------",
    "",
  ].join("\n");
}
