import type { DeadLetter } from "../db/dead-letters";
import { createClient } from "../sdk/client";
import { printJson, printJsonLines } from "./output";
import { type Column, formatTable } from "./table";

/** Options of `jetfn dlq`. */
export interface DlqCommandOptions {
  json?: boolean;
  limit?: string;
}

const COLUMNS: Column<DeadLetter>[] = [
  { header: "ID", value: (row) => row.id },
  { header: "FUNCTION", value: (row) => row.function },
  { header: "ATTEMPTS", value: (row) => String(row.attempts), right: true },
  { header: "DIED", value: (row) => row.diedAt ?? "-" },
  { header: "LAST ERROR", value: (row) => lastError(row) },
];

/** `jetfn dlq [fn]`: dead jobs not yet retried, newest first. */
export async function dlqCommand(fn: string | undefined, options: DlqCommandOptions): Promise<void> {
  const client = await createClient();
  try {
    const limit = options.limit === undefined ? undefined : Number(options.limit);
    const deadLetters = await client.deadLetters({ function: fn, limit });
    if (options.json) printJsonLines(deadLetters);
    else if (deadLetters.length === 0) process.stdout.write(fn ? `no dead jobs of ${fn}\n` : "no dead jobs\n");
    else process.stdout.write(formatTable(COLUMNS, deadLetters));
  } finally {
    await client.close();
  }
}

/** `jetfn dlq drop <id>`: discards a dead job (recorded as `dropped`, with when). */
export async function dlqDropCommand(id: string, options: { json?: boolean }): Promise<void> {
  const client = await createClient();
  try {
    const dropped = await client.dropDeadLetter(id);
    if (options.json) printJson(dropped);
    else process.stdout.write(`dropped ${dropped.id} at ${dropped.droppedAt}\n`);
  } finally {
    await client.close();
  }
}

function lastError(row: DeadLetter): string {
  if (!row.error) return "-";
  const text = `${row.error.code} ${row.error.name}: ${row.error.message}`.replace(/\s+/g, " ");
  return text.length > 100 ? `${text.slice(0, 99)}…` : text;
}
