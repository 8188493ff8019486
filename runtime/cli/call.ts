import { createClient } from "../sdk/client";
import { printJson, readJsonArgument } from "./output";

/** `jetfn call <fn> [json]`: request-reply; prints the JSON result. */
export async function callCommand(
  name: string,
  json: string | undefined,
  options: { timeout?: number },
): Promise<void> {
  const input = await readJsonArgument(json);
  const client = await createClient();
  try {
    printJson(await client.call(name, input, { timeout: options.timeout }));
  } finally {
    await client.close();
  }
}
