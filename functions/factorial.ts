// Gearman's long-running task: the client gets a handle at once, polls the job's status and
// progress by that handle (`jetfn status <id>`), and fetches the result when it is done.
import { sql } from "drizzle-orm";
import { defineFunction, z } from "../runtime";
import { factorials } from "../schema/app";

export default defineFunction({
  description: "Compute n! step by step, reporting progress, and keep the result",
  input: z.object({
    n: z.number().int().min(0).max(5_000),
    /** Pause per step, to make the progress visible (the Gearman example sleeps a second). */
    stepDelayMs: z.number().int().min(0).max(10_000).default(0),
  }),
  output: z.object({ n: z.number(), factorial: z.string() }),
  timeout: "2h",
  concurrency: 2,
  async handler({ n, stepDelayMs }, ctx) {
    let result = 1n;
    for (let i = 1; i <= n; i++) {
      result *= BigInt(i);
      ctx.progress(i, n);
      if (stepDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, stepDelayMs));
      if (ctx.signal.aborted) throw ctx.signal.reason;
    }
    const value = result.toString();
    await ctx.db
      .insert(factorials)
      .values({ n, value })
      .onConflictDoUpdate({ target: factorials.n, set: { value, computedAt: sql`now()` } });
    return { n, factorial: value };
  },
});
