// Shared by the primes functions; files starting with "_" are helpers, not deployed.

/** True when n is prime (trial division by 6k +/- 1). */
export function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n < 4) return true;
  if (n % 2 === 0 || n % 3 === 0) return false;
  for (let d = 5; d * d <= n; d += 6) if (n % d === 0 || n % (d + 2) === 0) return false;
  return true;
}

/** Primes in [from, to], by a segmented sieve of Eratosthenes. */
export function sieve(from: number, to: number): number[] {
  const low = Math.max(2, from);
  if (to < low) return [];
  const limit = Math.floor(Math.sqrt(to));
  const small: number[] = [];
  const marks = new Uint8Array(limit + 1);
  for (let i = 2; i <= limit; i++) {
    if (marks[i]) continue;
    small.push(i);
    for (let j = i * i; j <= limit; j += i) marks[j] = 1;
  }
  const composite = new Uint8Array(to - low + 1);
  for (const p of small) {
    for (let j = Math.max(p * p, Math.ceil(low / p) * p); j <= to; j += p) composite[j - low] = 1;
  }
  const primes: number[] = [];
  for (let i = 0; i < composite.length; i++) if (!composite[i]) primes.push(low + i);
  return primes;
}
