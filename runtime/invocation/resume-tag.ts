import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/**
 * A durable sleep ends its run; the next run is started by a *resumption*: a job message of the
 * function with `Jetfn-Id`, `Jetfn-Resume: <token>.<tag>` and an empty body (docs/durable-steps.md).
 * The token names the one resumption that may run the invocation on (the record's `resume`); the
 * tag is an HMAC of the function, the invocation id and the token under the runtimes' secret (the
 * one that signs woken jobs, flow/wake-tag.ts, signed here with a first line of its own so no tag
 * passes for the other). Anyone may publish to `fn.job.<name>`; only a runtime can make a tag that
 * verifies, so a client can neither start, skip nor steer a run.
 */
export const RESUME_HEADER = "Jetfn-Resume";

const TAG_BYTES = 16;
/**
 * `<seq>s<n>`: the sleep recorded as step seq, set the n-th time; `<seq>r<a>`: the step recorded as
 * seq, to be tried again for its attempt a (other letters are kept for later kinds).
 */
const TOKEN_PATTERN = /^[0-9]{1,9}[a-z][0-9]{0,9}$/;
const HEADER_PATTERN = /^([0-9]{1,9}[a-z][0-9]{0,9})\.([A-Za-z0-9_-]{22})$/;

/** The token of the `n`-th suspension at a sleep recorded as step `seq`. */
export function sleepToken(seq: number, n: number): string {
  return `${seq}s${n}`;
}

/** The token of the resumption that runs the step recorded as step `seq` again, for its attempt `attempt`. */
export function retryToken(seq: number, attempt: number): string {
  return `${seq}r${attempt}`;
}

/** The token of the resumption that ends the wait recorded as step `seq` when its timeout comes. */
export function waitTimeoutToken(seq: number): string {
  return `${seq}t`;
}

/** The token of the resumption that runs an invocation on after an event matched its wait recorded as step `seq`. */
export function waitMatchToken(seq: number): string {
  return `${seq}m`;
}

/**
 * The token of the run that resumes a dead invocation reopened by `jetfn retry`: `<seq>o<k>`, seq the
 * invocation's last step, k one more than the reopening before it at that step (so each is new).
 */
export function reopenToken(lastSeq: number, current: string | null): string {
  const match = current === null ? null : new RegExp(`^${lastSeq}o([0-9]+)$`).exec(current);
  return `${lastSeq}o${match ? Number(match[1]) + 1 : 1}`;
}

/** Which suspension a sleep's token is (the `n` of sleepToken), or 0 for another token. */
export function sleepTokenCount(token: string | undefined): number {
  const match = token === undefined ? null : /^[0-9]+s([0-9]+)$/.exec(token);
  return match ? Number(match[1]) : 0;
}

/** The header value of the resumption with `token` of invocation `id` of `fn`. */
export function resumeHeader(secret: string, fn: string, id: string, token: string): string {
  if (!TOKEN_PATTERN.test(token)) throw new TypeError(`not a resume token: ${token}`);
  return `${token}.${tag(secret, fn, id, token)}`;
}

/**
 * The resumption's message id in every stream it passes through (`Nats-Msg-Id`):
 * `<function>:<id>:<token>:<digest>`, the digest a hash of its header. Its own, not the job's (a sleep
 * shorter than the duplicate window would be dropped as a repeat of the job's message), and
 * unguessable without the header's tag, so nobody can take it first (JetStream would drop the real one
 * as a duplicate, and the job never wake).
 */
export function resumeMessageId(fn: string, id: string, header: string): string {
  return resumptionName("resume-msg", fn, id, header);
}

/**
 * The resumption's outbox row id: of the same shape, with another digest. Apps may read outbox ids:
 * this one gives neither the tag nor the message id away.
 */
export function resumeRowId(fn: string, id: string, header: string): string {
  return resumptionName("resume-row", fn, id, header);
}

function resumptionName(label: string, fn: string, id: string, header: string): string {
  const digest = createHash("sha256").update(`${label}\n${header}`).digest().subarray(0, TAG_BYTES);
  return `${fn}:${id}:${header.slice(0, header.indexOf("."))}:${digest.toString("base64url")}`;
}

/** The token a header carries, if its tag verifies for invocation `id` of `fn`; undefined otherwise. */
export function readResume(secret: string, fn: string, id: string, header: string): string | undefined {
  const match = HEADER_PATTERN.exec(header);
  if (!match) return undefined;
  const token = match[1] as string;
  const expected = Buffer.from(tag(secret, fn, id, token));
  const given = Buffer.from(match[2] as string);
  return expected.length === given.length && timingSafeEqual(expected, given) ? token : undefined;
}

function tag(secret: string, fn: string, id: string, token: string): string {
  return createHmac("sha256", secret)
    .update(`resume\n${fn}\n${id}\n${token}`)
    .digest()
    .subarray(0, TAG_BYTES)
    .toString("base64url");
}
