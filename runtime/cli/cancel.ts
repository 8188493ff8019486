import { createClient } from "../sdk/client";
import { printJson } from "./output";

/** `jetfn cancel <id> [--reason <text>]`: cancels a job that has not ended (E_NOT_CANCELLABLE otherwise). */
export async function cancelCommand(id: string, options: { reason?: string; json?: boolean }): Promise<void> {
  const client = await createClient();
  try {
    const reply = await client.cancel(id, { reason: options.reason });
    if (options.json) printJson(reply);
    else process.stdout.write(`${reply.id}  cancelled${reply.function ? `  ${reply.function}` : ""}\n`);
  } finally {
    await client.close();
  }
}
