import type { z } from "zod";
import { parseInput } from "../invocation/validation";
import { JetfnError } from "../support/errors";

/** Marker carried by every event definition; a string so copies of the runtime recognise each other. */
export const EVENT_KIND = "jetfn.event";

/** What `defineEvent` returns: an event's name and the schema its data must match. */
export interface EventDefinition<Schema extends z.ZodType = z.ZodType> {
  readonly kind: typeof EVENT_KIND;
  readonly name: string;
  readonly schema: Schema;
}

/** Data type of an event definition, as emitters write it. */
export type EventDataOf<E> = E extends EventDefinition<infer S> ? z.input<S> : unknown;

const SEGMENT = /^[a-z0-9_-]+$/;

/** True for a valid event name: like a function name, dot-separated lower-case segments, no wildcards. */
export function isValidEventName(name: string): boolean {
  return name.length > 0 && name.length <= 200 && name.split(".").every((segment) => SEGMENT.test(segment));
}

/**
 * True for a valid `on` pattern: an event name whose segments may also be `*` (any one segment),
 * and whose last segment may be `>` (one or more segments), as in NATS subjects.
 */
export function isValidEventPattern(pattern: string): boolean {
  if (pattern.length === 0 || pattern.length > 200) return false;
  const segments = pattern.split(".");
  return segments.every(
    (segment, index) => SEGMENT.test(segment) || segment === "*" || (segment === ">" && index === segments.length - 1),
  );
}

// Shared through globalThis: function files and apps may load their own copy of this module.
const REGISTRY_KEY = Symbol.for("jetfn.event-definitions");
const shared = globalThis as { [REGISTRY_KEY]?: Map<string, EventDefinition> };
shared[REGISTRY_KEY] ??= new Map();
const registry = shared[REGISTRY_KEY];

/**
 * Declares an event and the schema of its data. Emits of this event (`ctx.emit`, `client.emit`,
 * `emitInTransaction`) in this process are validated against it and refused with E_INPUT_INVALID.
 * @example
 * export const commentCreated = defineEvent("comment.created", z.object({ postId: z.number(), commentId: z.number() }));
 * await ctx.emit(commentCreated, { postId: 1, commentId: 7 });
 */
export function defineEvent<Schema extends z.ZodType>(name: string, schema: Schema): EventDefinition<Schema> {
  if (!isValidEventName(name)) throw new JetfnError("E_INPUT_INVALID", describeInvalidEventName(name));
  if (typeof (schema as { safeParse?: unknown } | undefined)?.safeParse !== "function") {
    throw new JetfnError("E_INPUT_INVALID", `defineEvent("${name}"): the schema must be a zod schema`);
  }
  const definition = Object.freeze({ kind: EVENT_KIND, name, schema });
  registry.set(name, definition);
  return definition;
}

/** True when `value` looks like something `defineEvent` returned (by shape, not identity). */
export function isEventDefinition(value: unknown): value is EventDefinition {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { kind?: unknown }).kind === EVENT_KIND &&
    typeof (value as { name?: unknown }).name === "string"
  );
}

/**
 * Checks an emit: the name must be a valid event name, and the data must match the event's schema
 * (the one passed in, or the one `defineEvent` registered in this process for that name). Returns
 * the event's name and the data to send (the parsed value when there is a schema).
 */
export function checkEmit(event: string | EventDefinition, data: unknown): { name: string; data: unknown } {
  const name = typeof event === "string" ? event : event.name;
  if (typeof name !== "string" || !isValidEventName(name)) {
    throw new JetfnError("E_INPUT_INVALID", describeInvalidEventName(String(name)));
  }
  const definition = typeof event === "string" ? registry.get(name) : event;
  if (!definition) return { name, data };
  return { name, data: parseInput(definition.schema, data, `event ${name}`) };
}

/** Why an event name is refused, in words a log line can carry. */
export function describeInvalidEventName(name: string): string {
  return `"${name}" is not a valid event name: use dot-separated segments of lower-case letters, digits, "-" and "_" (wildcards only in \`on\`)`;
}
