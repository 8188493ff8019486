import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * A job woken from the waiting stream goes back to `fn.job.<name>` as a new message. The header
 * `Jetfn-Woken` carries what the new message must keep from the parked one: the attempts it had
 * already spent and its first enqueue time, with an HMAC tag under the runtimes' secret. Anyone
 * may publish to `fn.job.<name>`; only a runtime can write a tag that verifies, so a client cannot
 * give its job spent attempts, an old enqueue time, or an id of the shape the runtime derives.
 */
export const WOKEN_HEADER = "Jetfn-Woken";

/** What a woken job keeps from before it waited. */
export interface WokenJob {
  attemptsBefore: number;
  enqueuedAt: number;
}

const TAG_BYTES = 16;
const WOKEN_PATTERN = /^([0-9]{1,4})\.([0-9]{1,15})\.([A-Za-z0-9_-]{22})$/;

/** The header value for job `id` of `fn`. */
export function wokenHeader(secret: string, fn: string, id: string, job: WokenJob): string {
  return `${job.attemptsBefore}.${job.enqueuedAt}.${tag(secret, fn, id, job)}`;
}

/** What a header says, if its tag verifies for this job; undefined otherwise. */
export function readWoken(secret: string, fn: string, id: string, header: string | undefined): WokenJob | undefined {
  const match = header === undefined ? null : WOKEN_PATTERN.exec(header);
  if (!match) return undefined;
  const job = { attemptsBefore: Number(match[1]), enqueuedAt: Number(match[2]) };
  const expected = Buffer.from(tag(secret, fn, id, job));
  const given = Buffer.from(match[3] as string);
  return expected.length === given.length && timingSafeEqual(expected, given) ? job : undefined;
}

function tag(secret: string, fn: string, id: string, job: WokenJob): string {
  return createHmac("sha256", secret)
    .update(`woken\n${fn}\n${id}\n${job.attemptsBefore}\n${job.enqueuedAt}`)
    .digest()
    .subarray(0, TAG_BYTES)
    .toString("base64url");
}
