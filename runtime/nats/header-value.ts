import type { MsgHdrs } from "@nats-io/transport-node";

/**
 * The first value of header `name` (its exact name), or undefined when the header is absent or
 * empty. nats.js's `get()` lists every name and filters the list on each call, two arrays per
 * lookup; a job reads six of its headers. Decoded headers keep one map, by the names as sent: it
 * is read directly when it is there, and `get()` asked otherwise.
 */
export function headerValue(headers: MsgHdrs | undefined, name: string): string | undefined {
  if (headers === undefined) return undefined;
  const decoded = (headers as unknown as { headers?: unknown }).headers;
  const value = decoded instanceof Map ? (decoded.get(name) as string[] | undefined)?.[0] : headers.get(name);
  return value || undefined;
}
