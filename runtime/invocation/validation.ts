import type { z } from "zod";
import { JetfnError, type ValidationIssue } from "../support/errors";
import { jsonDepth, MAX_INPUT_DEPTH } from "./json-depth";

/**
 * Parses `value` with `schema`. A missing body (undefined) is also tried as `{}`, so a function
 * whose input is an object of optional fields can be called with no body at all.
 */
export function parseInput(schema: z.ZodType, value: unknown, fn: string): unknown {
  let parsed = schema.safeParse(value);
  if (!parsed.success && value === undefined) parsed = schema.safeParse({});
  if (parsed.success) return parsed.data;
  throw new JetfnError("E_INPUT_INVALID", `input for ${fn} is invalid: ${summarise(parsed.error.issues)}`, {
    issues: toIssues(parsed.error.issues),
  });
}

/** Checks a handler's result against its output schema, when it has one. */
export function parseOutput(schema: z.ZodType | undefined, value: unknown, fn: string): unknown {
  if (!schema) return value;
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new JetfnError(
    "E_OUTPUT_INVALID",
    `${fn} returned a result its output schema refuses: ${summarise(parsed.error.issues)}`,
    {
      issues: toIssues(parsed.error.issues),
    },
  );
}

// One decoder for every body: decode() without { stream: true } keeps no state between calls.
const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A function's input from a message body: JSON (an empty body is `undefined`), nested at most
 * MAX_INPUT_DEPTH levels, so validating it cannot exhaust the stack. Throws E_INPUT_INVALID.
 */
export function parseInputBody(body: Uint8Array, fn: string): unknown {
  const input = parseJsonBody(body, fn);
  if (jsonDepth(body) > MAX_INPUT_DEPTH) {
    throw new JetfnError("E_INPUT_INVALID", `input for ${fn} is nested deeper than ${MAX_INPUT_DEPTH} levels`);
  }
  return input;
}

/** Parses a message body as JSON; an empty body is `undefined`. */
export function parseJsonBody(body: Uint8Array, fn: string): unknown {
  if (body.length === 0) return undefined;
  let text: string;
  try {
    text = STRICT_UTF8.decode(body);
  } catch {
    throw new JetfnError("E_INPUT_INVALID", `input for ${fn} is not valid UTF-8`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new JetfnError("E_INPUT_INVALID", `input for ${fn} is not valid JSON: ${(error as Error).message}`);
  }
}

function toIssues(issues: readonly z.core.$ZodIssue[]): ValidationIssue[] {
  return issues.map((issue) => ({
    path: issue.path.map((key) => (typeof key === "number" ? key : String(key))),
    message: issue.message,
    code: issue.code,
  }));
}

function summarise(issues: readonly z.core.$ZodIssue[]): string {
  const shown = issues.slice(0, 3).map((issue) => {
    const where = issue.path.length > 0 ? issue.path.map(String).join(".") : "(root)";
    return `${where}: ${issue.message}`;
  });
  return issues.length > 3 ? `${shown.join("; ")}; and ${issues.length - 3} more` : shown.join("; ");
}
