import { createHash } from "node:crypto";
import type { ResolvedLimit } from "./flow-options";

/**
 * The token naming one key of a limit in bucket keys and subjects. A function-wide limit is `_`;
 * a short key of letters, digits, `-` and `_` is shown as itself (`k_acme`), any other as a hash
 * (`h_<32 hex>`), so no key can reach outside its place in a subject or a bucket key.
 */
export const FUNCTION_WIDE_TOKEN = "_";
/** Token of a job whose key function threw or returned something else than a string or number. */
export const UNKEYED_TOKEN = "x_invalid";

const READABLE_KEY = /^[A-Za-z0-9_-]{1,64}$/;

/** The token of a key value. */
export function keyToken(value: string): string {
  if (READABLE_KEY.test(value)) return `k_${value}`;
  return `h_${createHash("sha256").update(value).digest("hex").slice(0, 32)}`;
}

/** The token of the key `limit` gives `input` (never throws: a failing key function shares one token). */
export function limitToken(limit: ResolvedLimit, input: unknown): string {
  if (!limit.key) return FUNCTION_WIDE_TOKEN;
  try {
    const value = limit.key(input);
    if (typeof value === "number" && Number.isFinite(value)) return keyToken(String(value));
    if (typeof value === "string" && value.length > 0) return keyToken(value);
  } catch {
    // A key function that throws on this input: its jobs share one key, and stay limited.
  }
  return UNKEYED_TOKEN;
}

/** The group of slots of one key of one limit: `<kind>.<token>.<function>` (also the waiting subject's tail). */
export function slotGroup(fn: string, limit: ResolvedLimit, token: string): string {
  return `${limit.kind}.${token}.${fn}`;
}

/** The function a slot group belongs to (its kind and token hold no dots). */
export function groupFunction(group: string): string {
  return group.slice(group.indexOf(".", 2) + 1);
}
