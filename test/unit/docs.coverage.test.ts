// What a user types or sees on the wire must be documented: every environment variable the runtime
// reads has a row in docs/configuration.md, every CLI command and flag appears in
// docs/operations.md, and every subject, stream, bucket and header name the runtime uses appears
// somewhere in docs/. A variable added to runtime/config.ts without its row fails here.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const read = (file: string): string => readFileSync(path.join(ROOT, file), "utf8");

/** The runtime's TypeScript sources, relative to the repository root. */
function runtimeSources(): string[] {
  return readdirSync(path.join(ROOT, "runtime"), { recursive: true })
    .map(String)
    .filter((name) => name.endsWith(".ts"))
    .map((name) => path.join("runtime", name));
}

/** Names read as `env.NAME`, `process.env.NAME` or `env["NAME"]`. */
function environmentVariables(source: string): string[] {
  const names = [...source.matchAll(/\benv(?:\.([A-Z][A-Z0-9_]*)|\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\])/g)].map(
    (match) => (match[1] ?? match[2]) as string,
  );
  return [...new Set(names)].sort();
}

/** Command paths (`dlq drop` for a subcommand) and long flags declared with commander. */
function cliSurface(source: string): { commands: string[]; flags: string[] } {
  const variables = new Map(
    [...source.matchAll(/const (\w+) = program\s*\.command\("([^"]+)"\)/g)].map((match) => [match[1], match[2]]),
  );
  const commands = [...source.matchAll(/(\w+)\s*\.command\("([^"]+)"\)/g)].map(([, receiver, name]) =>
    receiver === "program" ? (name as string) : `${variables.get(receiver as string) ?? receiver} ${name}`,
  );
  const flags = [...source.matchAll(/\.(?:option|requiredOption)\(\s*"[^"]*?(--[a-z][a-z-]*)/g)].map(
    (match) => match[1] as string,
  );
  return { commands: [...new Set(commands)].sort(), flags: [...new Set(flags)].sort() };
}

/** String literals naming subjects, streams, buckets and headers: what other NATS clients rely on. */
function wireNames(source: string): string[] {
  const names = [
    ...source.matchAll(
      /"((?:fn\.[a-z]+\.)|(?:jetfn\.(?:api|done)[a-z.]*)|(?:JETFN_[A-Z_]+)|(?:(?:Jetfn|Nats)-[A-Za-z-]+))"/g,
    ),
  ].map((match) => match[1] as string);
  return [...new Set(names)].sort();
}

/** Names in the first cell of each table row of a page: `| \`NATS_USER\`, \`NATS_PASSWORD\` | ...`. */
function tableRowNames(markdown: string): Set<string> {
  const firstCells = [...markdown.matchAll(/^\|([^|\n]*)\|/gm)].map((match) => match[1] as string);
  return new Set(firstCells.flatMap((cell) => [...cell.matchAll(/`([^`]+)`/g)].map((match) => match[1] as string)));
}

describe("environment variables", () => {
  const documented = tableRowNames(read("docs/configuration.md"));
  const config = environmentVariables(read("runtime/config.ts"));

  it("finds the variables runtime/config.ts reads", () => {
    expect(config).toEqual(expect.arrayContaining(["DATABASE_URL", "JETFN_DB_POOL", "NATS_URL"]));
  });

  it.each(config)("%s (read in runtime/config.ts) has a row in docs/configuration.md", (name) => {
    expect([...documented]).toContain(name);
  });

  const elsewhere = runtimeSources()
    .filter((file) => file !== path.join("runtime", "config.ts"))
    .flatMap((file) => environmentVariables(read(file)).map((name) => ({ name, file })));

  it.each(elsewhere)("$name (read in $file) has a row in docs/configuration.md", ({ name }) => {
    expect([...documented]).toContain(name);
  });
});

describe("the CLI", () => {
  const documented = read("docs/operations.md");
  const { commands, flags } = cliSurface(read("runtime/cli/main.ts"));

  it("finds the commands and flags of runtime/cli/main.ts", () => {
    expect(commands).toEqual(expect.arrayContaining(["dev", "start", "dlq drop", "migrate"]));
    expect(flags).toEqual(expect.arrayContaining(["--json", "--no-dashboard", "--since"]));
  });

  it.each(commands)("command `%s` is in docs/operations.md", (command) => {
    expect(documented).toContain(`\`${command}`);
  });

  it.each(flags)("flag %s is in docs/operations.md", (flag) => {
    expect(documented).toMatch(new RegExp(`${flag}(?![a-z-])`));
  });
});

describe("names on the wire", () => {
  const documented = readdirSync(path.join(ROOT, "docs"))
    .filter((name) => name.endsWith(".md"))
    .map((name) => read(path.join("docs", name)))
    .join("\n");
  const names = [...new Set(runtimeSources().flatMap((file) => wireNames(read(file))))].sort();

  it("finds the subjects, streams and headers the runtime uses", () => {
    expect(names).toEqual(
      expect.arrayContaining(["fn.call.", "fn.job.", "jetfn.api.status", "JETFN_JOBS", "Jetfn-Id", "Nats-Msg-Id"]),
    );
  });

  it.each(names)("%s is documented in docs/", (name) => {
    expect(documented).toContain(name);
  });
});
