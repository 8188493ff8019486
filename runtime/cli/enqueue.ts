import type { EnqueuedJob, FlowControlOptions } from "../flow/keyed-enqueue-request";
import { checkPriority } from "../flow/priority";
import { createClient } from "../sdk/client";
import { JetfnError } from "../support/errors";
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
  /** 0-3, as typed (checked by the client). */
  priority?: string;
  singleton?: string;
  debounce?: string;
  debouncePeriod?: string;
  debounceMaxWait?: string;
  json?: boolean;
}

/** `jetfn enqueue <fn> [json] [--wait] [--delay 10m | --at <time>] [--debounce <key> --debounce-period 30s [--debounce-max-wait 5m]]`: stores a job and prints its id (and, with --wait, its result). */
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
    const job = await client.enqueue(name, input, {
      id: options.id,
      delay: options.delay,
      runAt: options.at,
      ...flowControl(options),
    });
    const unserved = (await served) === false;
    if (!options.wait) {
      if (options.json) printJson(job);
      else process.stdout.write(`${job.id}\n`);
      explainKeyed(job, options);
      if (unserved) warnUnserved(name, job.id);
      return;
    }
    explainKeyed(job, options);
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

/** The flow-control options given on the command line, checked by the client. */
function flowControl(options: EnqueueCommandOptions): FlowControlOptions {
  const flow: FlowControlOptions = {};
  if (options.priority !== undefined) flow.priority = checkPriority(options.priority);
  if (options.singleton !== undefined) flow.singleton = { key: options.singleton };
  if (options.debounce !== undefined) {
    if (options.debouncePeriod === undefined) {
      throw new JetfnError("E_INPUT_INVALID", "--debounce needs --debounce-period, e.g. --debounce-period 30s");
    }
    flow.debounce = { key: options.debounce, period: options.debouncePeriod };
    if (options.debounceMaxWait !== undefined) flow.debounce.maxWait = options.debounceMaxWait;
  } else if (options.debouncePeriod !== undefined || options.debounceMaxWait !== undefined) {
    throw new JetfnError("E_INPUT_INVALID", "--debounce-period and --debounce-max-wait need --debounce <key>");
  }
  return flow;
}

/** Says on stderr when a keyed enqueue stored nothing new: the id printed is another job's. */
function explainKeyed(job: EnqueuedJob, options: EnqueueCommandOptions): void {
  if (job.existing) {
    process.stderr.write(
      `jetfn: job ${job.id} already holds singleton key ${JSON.stringify(options.singleton)} (queued or running); nothing new was enqueued\n`,
    );
  }
  if (job.supersededBy) {
    process.stderr.write(`jetfn: job ${job.id} was superseded at once by job ${job.supersededBy}, enqueued later\n`);
  }
}

/** The job is stored, so this is no failure; but nothing will run it until a runtime deploys the name. */
function warnUnserved(name: string, id: string): void {
  process.stderr.write(
    `jetfn: warning: no running runtime deploys ${name}; job ${id} is stored and waits until one does\n`,
  );
}
