// `npm run bench` / `npm run bench:smoke`: runs the benchmarks and writes BENCHMARKS.md.
import path from "node:path";
import { parseArgs } from "node:util";
import { runBench, SCENARIOS } from "./harness";
import { parseSizes } from "./model";

const { values } = parseArgs({
  options: {
    smoke: { type: "boolean", default: false },
    rounds: { type: "string" },
    only: { type: "string" },
    contenders: { type: "string" },
    out: { type: "string" },
    set: { type: "string" },
    help: { type: "boolean", default: false },
  },
});

if (values.help) {
  process.stdout.write(
    [
      "usage: npm run bench -- [--smoke] [--rounds N] [--only id,id] [--contenders name,name] [--set size=N,...] [--out FILE]",
      "--contenders runs only these contenders in the job scenarios (e.g. jetfn, for A/B runs of two commits)",
      "--set overrides sizes, e.g. --set noopJobs=5000,scaleCounts=0/500 (names as in bench/model.ts)",
      `scenarios: ${SCENARIOS.filter((scenario) => !scenario.optIn)
        .map((scenario) => scenario.id)
        .join(", ")}`,
      `opt-in (only with --only): ${SCENARIOS.filter((scenario) => scenario.optIn)
        .map((scenario) => scenario.id)
        .join(", ")}`,
      "--out defaults to BENCHMARKS.md for a full run; a smoke run writes nothing unless given --out.",
      "",
    ].join("\n"),
  );
  process.exit(0);
}

const controller = new AbortController();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    process.stderr.write(`${signal}: stopping after the current scenario, then cleaning up.\n`);
    controller.abort();
  });
}

const argv = process.argv.slice(2).join(" ");
const script = process.env.npm_lifecycle_event;
const command = script
  ? `npm run ${script}${argv ? ` -- ${argv}` : ""}`
  : `node ${process.execArgv.join(" ")} bench/run.ts${argv ? ` ${argv}` : ""}`;
// A smoke run, or one leaving contenders out, is no full report: it writes only where --out says.
const contenders = values.contenders?.split(",").map((name) => name.trim());
const out = values.out ?? (values.smoke || contenders ? undefined : "BENCHMARKS.md");

const result = await runBench({
  smoke: values.smoke,
  rounds: values.rounds ? Number(values.rounds) : undefined,
  only: values.only?.split(",").map((id) => id.trim()),
  contenders,
  sizes: parseSizes(values.set),
  out: out ? path.resolve(out) : null,
  command,
  signal: controller.signal,
});
process.stdout.write(`${result.table}\n`);
if (out) process.stdout.write(`Wrote ${out} (${Math.round(result.durationMs / 1000)} s).\n`);
const failed = result.errors.length > 0 || result.checks.some((check) => !check.ok);
process.exit(failed ? 1 : 0);
