import { createClient } from "../sdk/client";
import { JetfnError } from "../support/errors";
import { printJsonLines } from "./output";

/** Options of `jetfn retry`. */
export interface RetryCommandOptions {
  function?: string;
  all?: boolean;
  fresh?: boolean;
  json?: boolean;
}

/**
 * `jetfn retry <id>` or `jetfn retry --function <fn> --all`: runs dead jobs again, resuming those
 * that recorded durable steps (unless --fresh), as fresh jobs otherwise.
 */
export async function retryCommand(id: string | undefined, options: RetryCommandOptions): Promise<void> {
  if ((id === undefined) === !(options.all && options.function)) {
    throw new JetfnError("E_INPUT_INVALID", "give either a dead job's id, or --function <fn> --all");
  }
  const client = await createClient();
  try {
    const how = { fresh: options.fresh === true };
    const retried =
      id === undefined
        ? await client.retryDeadLetters(options.function as string, how)
        : [await client.retryDeadLetter(id, how)];
    if (options.json) printJsonLines(retried);
    else if (retried.length === 0) process.stdout.write(`no dead jobs of ${options.function} to retry\n`);
    else {
      for (const job of retried) {
        const line = job.resumed ? `${job.id} resumed from its steps` : `${job.id} -> ${job.newId}`;
        process.stdout.write(`${line}  ${job.function}\n`);
      }
    }
  } finally {
    await client.close();
  }
}
