import { createHash } from "node:crypto";
import { JetfnError } from "../support/errors";
import type { ResolvedLimit } from "./flow-options";

/**
 * The token naming one key of a limit in bucket keys and subjects. A function-wide limit is `_`;
 * a short key of letters, digits, `-` and `_` is shown as itself (`k_acme`), any other as a hash
 * (`h_<32 hex>`), so no key can reach outside its place in a subject or a bucket key.
 */
export const FUNCTION_WIDE_TOKEN = "_";
const READABLE_KEY = /^[A-Za-z0-9_-]{1,64}$/;

/** The token of a key value. */
export function keyToken(value: string): string {
  if (READABLE_KEY.test(value)) return `k_${value}`;
  return `h_${createHash("sha256").update(value).digest("hex").slice(0, 32)}`;
}

/**
 * The token of the key `limit` gives `input`. A key function that throws, or returns anything but a
 * non-empty string or a finite number, is a bug of the function's author: the attempt fails with
 * `E_FLOW_KEY_INVALID` (retried like a handler's error), rather than the job running under a
 * guessed key.
 */
export function limitToken(limit: ResolvedLimit, input: unknown): string {
  if (!limit.key) return FUNCTION_WIDE_TOKEN;
  const option = limit.kind === "c" ? "concurrencyLimit" : "rateLimit";
  let value: unknown;
  try {
    value = limit.key(input);
  } catch (error) {
    throw new JetfnError("E_FLOW_KEY_INVALID", `${option}.key threw on this job's input: ${describe(error)}`, {
      cause: error,
    });
  }
  if (typeof value === "number" && Number.isFinite(value)) return keyToken(String(value));
  if (typeof value === "string" && value.length > 0) return keyToken(value);
  const shown =
    typeof value === "string" ? "an empty string" : typeof value === "number" ? String(value) : typeof value;
  throw new JetfnError(
    "E_FLOW_KEY_INVALID",
    `${option}.key returned ${value === null ? "null" : shown}; it must return a non-empty string or a finite number`,
  );
}

function describe(error: unknown): string {
  try {
    return error instanceof Error ? error.message : String(error);
  } catch {
    return "an unprintable value";
  }
}

/** The group of slots of one key of one limit: `<kind>.<token>.<function>` (also the waiting subject's tail). */
export function slotGroup(fn: string, limit: ResolvedLimit, token: string): string {
  return `${limit.kind}.${token}.${fn}`;
}

/** The function a slot group belongs to (its kind and token hold no dots). */
export function groupFunction(group: string): string {
  return group.slice(group.indexOf(".", 2) + 1);
}
