import { createClient } from "../client";
import { JetfnError } from "../errors";
import { isFunctionServed } from "./function-served";
import { printJson, readJsonArgument } from "./output";
import { waitForJob } from "./wait-for-job";

/** How long `--wait` waits without `--timeout`: 1h. */
const DEFAULT_WAIT_MS = 3_600_000;

/** Options of `jetfn enqueue`. */
export interface EnqueueCommandOptions {
  wait?: boolean;
  id?: string;
  /** Milliseconds, parsed from `--timeout`. */
  timeout?: number;
  delay?: string;
  at?: string;
  json?: boolean;
}

/** `jetfn enqueue <fn> [json] [--wait] [--delay 10m | --at <time>]`: stores a job and prints its id (and, with --wait, its result). */
export async function enqueueCommand(
  name: string,
  json: string | undefined,
  options: EnqueueCommandOptions,
): Promise<void> {
  const input = await readJsonArgument(json);
  const client = await createClient();
  // Asked alongside the publish so the answer costs no extra wait when a runtime serves it.
  const served = isFunctionServed(client.connection, name);
  try {
    const job = await client.enqueue(name, input, { id: options.id, delay: options.delay, runAt: options.at });
    const unserved = (await served) === false;
    if (!options.wait) {
      if (options.json) printJson(job);
      else process.stdout.write(`${job.id}\n`);
      if (unserved) warnUnserved(name, job.id);
      return;
    }
    process.stderr.write(`${job.id}\n`);
    if (unserved) warnUnserved(name, job.id);
    const view = await waitForJob(client, job.id, options.timeout ?? DEFAULT_WAIT_MS, name);
    if (view.status !== "succeeded") {
      const last = view.error as { message?: string } | undefined;
      throw new JetfnError(
        "E_HANDLER_FAILED",
        `job ${job.id} is ${view.status}: ${last?.message ?? "no error recorded"}`,
      );
    }
    printJson(options.json ? view : view.result);
  } finally {
    await served.catch(() => undefined);
    await client.close();
  }
}

/** The job is stored, so this is no failure; but nothing will run it until a runtime deploys the name. */
function warnUnserved(name: string, id: string): void {
  process.stderr.write(
    `jetfn: warning: no running runtime deploys ${name}; job ${id} is stored and waits until one does\n`,
  );
}
