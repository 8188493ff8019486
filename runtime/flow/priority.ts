import { isValidFunctionName } from "../deploy/function-name";
import { consumerName, JOB_PREFIX } from "../nats/subjects";
import { JetfnError } from "../support/errors";

/**
 * Job priority. A job enqueued with priority 1-3 is published to its function's priority subject,
 * `fn.job.<name>.P<n>`, instead of `fn.job.<name>` (priority 0, the default, unchanged). The
 * upper-case token can never be part of a function name, so the subject cannot belong to another
 * function. Each level has a durable consumer per function (`<consumer>:P<n>`), pulled by a puller
 * of its own that shares the function's concurrency limiter: a priority job is fetched as soon as
 * it is stored, while normal jobs are fetched a window at a time, so with a backlog it starts
 * after at most the window of normal jobs already held. nats-server 2.9 has no consumer priority
 * groups; separate subjects are what it offers.
 */

/** Header carrying a job's priority in an outbox row (the relay routes it to the priority subject). */
export const PRIORITY_HEADER = "Jetfn-Priority";
/** The highest priority; 0 is the default. */
export const MAX_PRIORITY = 3;
/** Priority levels that have their own subject and consumer, highest first. */
export const PRIORITY_LEVELS: readonly number[] = [3, 2, 1];

const LEVEL_TOKEN = /^P([1-3])$/;

/**
 * Checks a priority from a client, the CLI or a handler: an integer from 0 to 3 (a decimal string
 * is accepted, as from the command line). Throws E_INPUT_INVALID otherwise.
 */
export function checkPriority(value: unknown): number {
  const parsed = typeof value === "string" && /^[0-9]{1,2}$/.test(value) ? Number(value) : value;
  if (typeof parsed !== "number" || !Number.isInteger(parsed) || parsed < 0 || parsed > MAX_PRIORITY) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `priority ${describe(value)} is not valid: use an integer from 0 (the default) to ${MAX_PRIORITY} (starts first)`,
    );
  }
  return parsed;
}

/** `send-mail`, 0 -> `fn.job.send-mail`; `send-mail`, 2 -> `fn.job.send-mail.P2`. */
export function prioritySubject(name: string, priority: number): string {
  return priority === 0 ? JOB_PREFIX + name : `${JOB_PREFIX}${name}.P${priority}`;
}

/** The function and priority of a job subject, or undefined when it is not one. */
export function parseJobSubject(subject: string): { name: string; priority: number } | undefined {
  if (!subject.startsWith(JOB_PREFIX)) return undefined;
  const rest = subject.slice(JOB_PREFIX.length);
  const dot = rest.lastIndexOf(".");
  const level = dot > 0 ? LEVEL_TOKEN.exec(rest.slice(dot + 1)) : null;
  const name = level ? rest.slice(0, dot) : rest;
  if (!isValidFunctionName(name)) return undefined;
  return { name, priority: level ? Number(level[1]) : 0 };
}

/** Durable consumer of a function's priority level: `billing.charge`, 2 -> `billing:charge:P2`. */
export function priorityConsumerName(name: string, priority: number): string {
  return priority === 0 ? consumerName(name) : `${consumerName(name)}:P${priority}`;
}

/** The job subject a publish goes to for `name` and the `Jetfn-Priority` header value, if any. */
export function routePriority(name: string, header: string | undefined): string {
  if (header === undefined) return JOB_PREFIX + name;
  const level = /^[1-3]$/.test(header) ? Number(header) : 0;
  return prioritySubject(name, level);
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.slice(0, 40));
  if (typeof value === "number") return String(value);
  return typeof value;
}
