import { resolveConfig } from "../config";
import { functionTypesFile, writeFunctionTypes } from "../sdk/function-types";

/** `jetfn types`: writes jetfn-functions.ts, the map of functions by name for typed calls. */
export async function typesCommand(options: { out?: string }): Promise<void> {
  const config = resolveConfig();
  const file = options.out ?? functionTypesFile(config.functionsDir);
  const changed = await writeFunctionTypes(config.functionsDir, file);
  process.stdout.write(`${changed ? "wrote" : "unchanged"} ${file}\n`);
}
