import { createClient } from "../client";
import { parseDuration } from "../duration";
import { JetfnError } from "../errors";
import { printJson, readJsonArgument } from "./output";
import { waitForJob } from "./wait-for-job";

/** Options of `jetfn enqueue`. */
export interface EnqueueCommandOptions {
  wait?: boolean;
  id?: string;
  timeout?: string;
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
  try {
    const job = await client.enqueue(name, input, { id: options.id, delay: options.delay, runAt: options.at });
    if (!options.wait) {
      if (options.json) printJson(job);
      else process.stdout.write(`${job.id}\n`);
      return;
    }
    process.stderr.write(`${job.id}\n`);
    const view = await waitForJob(client, job.id, parseDuration(options.timeout ?? "1h"), name);
    if (view.status !== "succeeded") {
      const last = view.error as { message?: string } | undefined;
      throw new JetfnError(
        "E_HANDLER_FAILED",
        `job ${job.id} is ${view.status}: ${last?.message ?? "no error recorded"}`,
      );
    }
    printJson(options.json ? view : view.result);
  } finally {
    await client.close();
  }
}
