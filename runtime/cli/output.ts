import { parseDuration } from "../support/duration";
import { isJetfnErrorCode } from "../support/error-codes";
import { JetfnError, toJetfnError } from "../support/errors";

/** Prints a value as JSON on standard output: indented for a terminal, one line otherwise. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, process.stdout.isTTY ? 2 : undefined)}\n`);
}

/** Prints a list, one JSON object per line. */
export function printJsonLines(values: Iterable<unknown>): void {
  for (const value of values) process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Ends the command with a one-line reason on standard error and a non-zero exit code. */
export function fail(thrown: unknown, exitCode = 1): never {
  const error = toCliError(thrown);
  process.stderr.write(`jetfn: ${error.code}: ${error.message.split("\n")[0]}\n`);
  process.exit(exitCode);
}

/**
 * The error a command ends with. No handler runs in the CLI's own process, so an error without a
 * jetfn code (a Node or library error nobody expected) is E_INTERNAL, not a handler's failure.
 */
export function toCliError(thrown: unknown): JetfnError {
  if (isJetfnErrorCode((thrown as { code?: unknown } | null)?.code)) return toJetfnError(thrown);
  const message = thrown instanceof Error ? thrown.message : String(thrown);
  return new JetfnError("E_INTERNAL", `unexpected failure: ${message}`, { cause: thrown });
}

/** Parses a JSON argument; `-` reads standard input; absent means no input. */
export async function readJsonArgument(text: string | undefined): Promise<unknown> {
  if (text === undefined) return undefined;
  const source = text === "-" ? await readStdin() : text;
  try {
    return JSON.parse(source);
  } catch (error) {
    throw new JetfnError("E_INPUT_INVALID", `the input is not valid JSON: ${(error as Error).message}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Parses a `--timeout`-style option, refusing what is not a duration as an input error. */
export function parseDurationOption(option: string, value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new JetfnError("E_INPUT_INVALID", `${option}: ${(error as Error).message}`);
  }
}
