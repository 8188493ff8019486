// PHP-Daemon's PrimeNumbers worker, primes_among(): which of these numbers are prime.
import { defineFunction, z } from "../../runtime";
import { isPrime } from "./_math";

export default defineFunction({
  description: "The primes among a list of numbers (PHP-Daemon's PrimeNumbers->primes_among)",
  input: z.object({ numbers: z.array(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)).max(100_000) }),
  output: z.object({ primes: z.array(z.number()) }),
  async handler({ numbers }) {
    return { primes: numbers.filter(isPrime) };
  },
});
