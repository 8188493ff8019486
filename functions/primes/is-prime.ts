// PHP-Daemon's PrimeNumbers worker, is_prime().
import { defineFunction, z } from "../../runtime";
import { isPrime } from "./_math";

export default defineFunction({
  description: "Whether a number is prime (PHP-Daemon's PrimeNumbers->is_prime)",
  input: z.object({ n: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }),
  output: z.object({ n: z.number(), prime: z.boolean() }),
  async handler({ n }) {
    return { n, prime: isPrime(n) };
  },
});
