import { formatDuration } from "../support/duration";

/** One line of progress for a terminal: a bar, the count, elapsed time and an estimate of time left. */
export function progressLine(done: number, total: number | null, elapsedMs: number, width = 30): string {
  if (total === null || total <= 0) return `${done} done, ${formatDuration(elapsedMs)} elapsed`;
  const ratio = Math.min(1, Math.max(0, done / total));
  const filled = Math.round(ratio * width);
  const bar = `${"#".repeat(filled)}${"-".repeat(width - filled)}`;
  const left = ratio > 0 ? (elapsedMs / ratio) * (1 - ratio) : undefined;
  const eta = left === undefined ? "time left unknown" : `~${formatDuration(left)} left`;
  return `[${bar}] ${done}/${total} ${Math.round(ratio * 100)}%  ${formatDuration(elapsedMs)} elapsed, ${eta}`;
}
