// Photon's synchronous MemoryCache: callers get or put a value and wait for the answer.
// The store lives in this runtime process's memory (like Photon's task process): each runtime has
// its own, and a redeploy of this file starts empty. Use it for reference data, not for truth.
import { defineFunction, z } from "../runtime";

interface Entry {
  value: unknown;
  expiresAt: number;
  hits: number;
}

const store = new Map<string, Entry>();
let calls = 0;

/** Photon's loop(): every so many calls, drop expired keys so dead ones do not pile up. */
function sweep(now: number): void {
  if (++calls % 1_000 !== 0) return;
  for (const [key, entry] of store) if (entry.expiresAt <= now) store.delete(key);
}

export default defineFunction({
  description: "In-memory key-value cache with time-to-live (get / put / delete)",
  input: z.discriminatedUnion("action", [
    z.object({ action: z.literal("get"), key: z.string().min(1) }),
    z.object({
      action: z.literal("put"),
      key: z.string().min(1),
      value: z.json(),
      ttlSeconds: z
        .number()
        .positive()
        .max(365 * 24 * 3600)
        .default(3600),
    }),
    z.object({ action: z.literal("delete"), key: z.string().min(1) }),
  ]),
  timeout: "1s",
  concurrency: 64,
  async handler(input) {
    const now = Date.now();
    sweep(now);
    switch (input.action) {
      case "get": {
        const entry = store.get(input.key);
        if (!entry || entry.expiresAt <= now) {
          store.delete(input.key);
          return { hit: false, value: null };
        }
        entry.hits++;
        return { hit: true, value: entry.value, hits: entry.hits };
      }
      case "put":
        store.set(input.key, { value: input.value, expiresAt: now + input.ttlSeconds * 1000, hits: 0 });
        return { ok: true };
      case "delete":
        return { deleted: store.delete(input.key) };
    }
  },
});
