import { createHash, createHmac, randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { isUnanswered } from "../nats/until-answered";
import { JetfnError } from "../support/errors";

/**
 * Key, in the schedules bucket, of the secret that tags scheduled job ids. Function names are
 * lower-case, so no function's schedule can take this key.
 */
export const SCHEDULE_SECRET_KEY = "Secret";

/** Characters of the tag: 16 bytes of HMAC-SHA256 in base64url (128 bits). */
const TAG_LENGTH = 22;

/**
 * Reads the secret every runtime tags scheduled job ids with, creating it on first use. Created
 * with create-if-absent, so runtimes starting together all end up with the first one written.
 * A read or create NATS did not answer in time is thrown as it is, for the caller's start-up retry
 * (nats/until-answered.ts): asked again, the read finds a create that was carried out late.
 */
export async function scheduleSecret(kv: KV): Promise<string> {
  let failure: unknown;
  // A create that fails because another runtime won is followed by a read that finds theirs; a
  // create that keeps failing (no permission, no JetStream) is reported instead.
  for (let tries = 0; tries < 3; tries++) {
    const entry = await kv.get(SCHEDULE_SECRET_KEY);
    if (entry && entry.operation === "PUT" && entry.string().length > 0) return entry.string();
    try {
      await kv.create(SCHEDULE_SECRET_KEY, randomBytes(32).toString("base64url"));
    } catch (error) {
      if (isUnanswered(error)) throw error;
      failure = error;
    }
  }
  throw new JetfnError(
    "E_UNAVAILABLE",
    `could not create or read the schedules' secret (key ${SCHEDULE_SECRET_KEY} of the schedules bucket)`,
    { cause: failure },
  );
}

/**
 * The invocation id of a scheduled job: `s_` + `<fn>@<due time ISO>` in base64url (a SHA-256 when
 * too long) + `_` + an HMAC tag of that key under the schedules' secret. Runtimes racing for the
 * same due time derive the same id (they share the secret), so JetStream and the invocation record
 * keep one job; clients cannot read the secret, so they cannot predict the id and take the
 * scheduled run's place with a job of their own.
 */
export function scheduledJobId(fn: string, dueAt: Date, secret: string): string {
  const key = `${fn}@${dueAt.toISOString()}`;
  const tag = createHmac("sha256", secret).update(key).digest().subarray(0, 16).toString("base64url");
  const readable = `s_${Buffer.from(key).toString("base64url")}_${tag}`;
  return readable.length <= 128 ? readable : `s_${createHash("sha256").update(key).digest("hex")}_${tag}`;
}

/** The `<fn>@<due time ISO>` a scheduled job id encodes; undefined for other ids and hashed keys. */
export function scheduledJobKey(id: string): string | undefined {
  if (!id.startsWith("s_") || id.length < 2 + 1 + TAG_LENGTH + 1) return undefined;
  const key = Buffer.from(id.slice(2, -(TAG_LENGTH + 1)), "base64url").toString();
  return key.includes("@") ? key : undefined;
}
