import { execFileSync, spawnSync } from "node:child_process";

/** One metric family of a scrape: its declared type, help text and sample names. */
interface Family {
  type: string | undefined;
  help: string | undefined;
  samples: string[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)( \d+)?$/;
const SUFFIXES = ["_bucket", "_count", "_sum"];

/**
 * The rules of `promtool check metrics` (prometheus/util/promlint) that a scrape can break without
 * promtool at hand: every family has HELP and TYPE, counters end in `_total` and nothing else does,
 * `_bucket`/`_count`/`_sum` belong to histograms and summaries, names are snake_case, and samples
 * parse. Returns one line per problem, sorted, in promtool's wording where it has one.
 */
export function lintMetrics(text: string): string[] {
  const problems: string[] = [];
  const families = parseFamilies(text, problems);
  for (const [name, family] of families) {
    if (!NAME.test(name)) problems.push(`${name} is not a valid metric name`);
    if (!family.help) problems.push(`${name} no help text`);
    if (!family.type) problems.push(`${name} has no TYPE line`);
    if (family.type === "counter" && !name.endsWith("_total"))
      problems.push(`${name} counter metrics should have "_total" suffix`);
    if (family.type !== "counter" && name.endsWith("_total")) {
      problems.push(`${name} non-counter metrics should not have "_total" suffix`);
    }
    if (family.type !== "histogram" && family.type !== "summary" && SUFFIXES.some((suffix) => name.endsWith(suffix))) {
      problems.push(
        `${name} non-histogram and non-summary metrics should not have "${name.slice(name.lastIndexOf("_"))}" suffix`,
      );
    }
    if (/[a-z][A-Z]/.test(name))
      problems.push(`${name} metric names should be written in 'snake_case' not 'camelCase'`);
  }
  return problems.sort();
}

function parseFamilies(text: string, problems: string[]): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    const found = families.get(name) ?? { type: undefined, help: undefined, samples: [] };
    families.set(name, found);
    return found;
  };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const comment = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (comment) {
      const [, kind, name, rest] = comment as unknown as [string, string, string, string];
      if (kind === "HELP") family(name).help = rest;
      else family(name).type = rest;
      continue;
    }
    const sample = SAMPLE.exec(line);
    if (!sample || !isSampleValue(sample[3] as string)) {
      problems.push(`cannot parse the line: ${line}`);
      continue;
    }
    const name = sample[1] as string;
    // A histogram's or summary's samples carry its name plus _bucket, _count or _sum.
    const candidates = [
      name,
      ...SUFFIXES.filter((suffix) => name.endsWith(suffix)).map((suffix) => name.slice(0, -suffix.length)),
    ];
    const owner = candidates.find((candidate) => families.has(candidate));
    if (owner === undefined) problems.push(`${name} has samples before its TYPE line`);
    else family(owner).samples.push(name);
  }
  return families;
}

/** The promtool on PATH, or undefined where Prometheus is not installed. */
export function findPromtool(): string | undefined {
  const found = spawnSync("promtool", ["--version"], { stdio: "ignore" });
  return found.status === 0 ? "promtool" : undefined;
}

/** Runs `promtool check metrics` on a scrape; returns its exit code and what it printed. */
export function promtoolCheck(promtool: string, text: string): { status: number; output: string } {
  try {
    const output = execFileSync(promtool, ["check", "metrics"], { input: text, encoding: "utf8", stdio: "pipe" });
    return { status: 0, output };
  } catch (error) {
    const failed = error as { status: number; stdout: string; stderr: string };
    return { status: failed.status, output: `${failed.stdout}${failed.stderr}` };
  }
}

/** A float, or one of the special values the text format allows. */
function isSampleValue(value: string): boolean {
  // promtool parses with Go's ParseFloat, which takes any case of NaN (prom-client writes `Nan`).
  return /^([+-]Inf|nan)$/i.test(value) || !Number.isNaN(Number(value));
}
