// PHP-Daemon's PrimeNumbers worker, sieve(): all primes between two numbers.
import { defineFunction, z } from "../../runtime";
import { sieve } from "./_math";

export default defineFunction({
  description: "All primes in a range (PHP-Daemon's PrimeNumbers->sieve)",
  input: z
    .object({ from: z.number().int().min(0), to: z.number().int().max(100_000_000) })
    .refine((range) => range.to - range.from <= 10_000_000, "the range may span at most 10,000,000 numbers"),
  output: z.object({
    count: z.number().int(),
    first: z.number().nullable(),
    last: z.number().nullable(),
    primes: z.array(z.number()),
  }),
  timeout: "30s",
  concurrency: 2,
  async handler({ from, to }) {
    const primes = sieve(from, to);
    return {
      count: primes.length,
      first: primes[0] ?? null,
      last: primes.at(-1) ?? null,
      primes: primes.slice(0, 10_000),
    };
  },
});
