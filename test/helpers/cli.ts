import { type ChildProcess, execFile, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { stopWhenTestEnds, type TestScope } from "./test-scope";

/** The `jetfn` executable, as `npx jetfn` runs it. */
export const JETFN_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/jetfn.mjs");

/** What a finished command printed. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `jetfn <args>` to completion. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { cwd?: string; input?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [JETFN_BIN, ...args],
      { env: { ...process.env, ...env }, cwd: options.cwd, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** A long-running `jetfn` process (dev or start) whose output is collected. */
export interface CliProcess {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves when the output contains `text`. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  /** Sends a signal to the process itself (never by name) and waits for its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `jetfn <args>` in the background. Started inside a test, it is stopped when that test
 * ends, unless `options.laterTestsUseIt`.
 */
export function spawnCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { cwd?: string } & TestScope = {},
): CliProcess {
  const child = spawn(process.execPath, [JETFN_BIN, ...args], {
    env: { ...process.env, ...env },
    cwd: options.cwd,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const process_: CliProcess = {
    child,
    output: () => output,
    async waitFor(text, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (!output.includes(text)) {
        if (child.exitCode !== null)
          throw new Error(`jetfn exited (${child.exitCode}) before printing "${text}":\n${output}`);
        if (Date.now() > deadline) throw new Error(`jetfn did not print "${text}" within ${timeoutMs}ms:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
  if (!options.laterTestsUseIt) stopWhenTestEnds(() => process_.stop());
  return process_;
}
