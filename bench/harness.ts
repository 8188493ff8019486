import { readFile, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { auditOverheadScenario } from "./audit-overhead";
import { auditReadsScenario } from "./audit-reads";
import { clusterScaleScenario } from "./cluster-scale";
import { enqueueRateScenario } from "./enqueue-rate";
import { functionScaleScenario } from "./function-scale";
import { hotDeployScenario } from "./hot-deploy";
import { insertJobsScenario } from "./insert-jobs";
import type { BenchSizes, Check, Sample, Scenario, Skip } from "./model";
import { FULL_SIZES, SMOKE_SIZES } from "./model";
import { noopJobsScenario } from "./noop-jobs";
import { keepAbSection, type ReportInput, renderConsole, renderMarkdown } from "./report";
import { requestReplyScenario } from "./request-reply";
import { type Services, startServices } from "./services";

/** Every scenario, in the order they run within a round. */
export const SCENARIOS: readonly Scenario[] = [
  requestReplyScenario,
  noopJobsScenario,
  insertJobsScenario,
  enqueueRateScenario,
  hotDeployScenario,
  functionScaleScenario,
  auditOverheadScenario,
  auditReadsScenario,
  clusterScaleScenario,
];

/** Options of one benchmark run. */
export interface BenchOptions {
  /** Tiny counts and one round, for CI. @default false */
  smoke?: boolean;
  /** Rounds (each scenario runs once per round). @default 3, or 1 for smoke */
  rounds?: number;
  /** Overrides of single sizes (e.g. `{ noopJobs: 5000 }`). */
  sizes?: Partial<BenchSizes>;
  /** Only these scenario ids. @default all but the opt-in ones */
  only?: readonly string[];
  /** The job scenarios run only these contenders (A/B runs of jetfn alone). @default all */
  contenders?: readonly string[];
  /** Where to write the markdown report; null to write nothing. @default null */
  out?: string | null;
  /** Shown in the report as the command that produced it. */
  command?: string;
  /** Progress lines. @default to stderr */
  log?: (message: string) => void;
  /** Stops the run between scenarios when aborted (services are still stopped). */
  signal?: AbortSignal;
}

/** What a run produced. */
export interface BenchResult {
  samples: Sample[];
  checks: Check[];
  skips: Skip[];
  errors: string[];
  /** The compact table (also printed by the CLI). */
  table: string;
  markdown: string;
  durationMs: number;
}

/** Runs the benchmarks: starts the services, runs each scenario once per round, stops everything. */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const base = options.smoke ? SMOKE_SIZES : FULL_SIZES;
  const sizes: BenchSizes = {
    ...base,
    ...options.sizes,
    rounds: options.rounds ?? options.sizes?.rounds ?? base.rounds,
  };
  const log = options.log ?? ((message: string) => process.stderr.write(`${message}\n`));
  const scenarios = SCENARIOS.filter((scenario) =>
    options.only ? options.only.includes(scenario.id) : !scenario.optIn,
  );
  const samples: Sample[] = [];
  const checks: Check[] = [];
  const skips: Skip[] = [];
  const errors: string[] = [];
  const startedAt = new Date();
  const loadBefore = loadavg();
  const started = performance.now();
  const services: Services = await startServices(log);
  try {
    for (let round = 1; round <= sizes.rounds; round++) {
      for (const scenario of scenarios) {
        if (options.signal?.aborted) throw new Error("benchmark interrupted");
        const scenarioStarted = performance.now();
        log(`round ${round}/${sizes.rounds}: ${scenario.title}`);
        try {
          await scenario.run({
            round,
            sizes,
            services,
            contenders: options.contenders,
            record: (sample) => samples.push({ scenario: scenario.id, round, ...sample }),
            check: (contender, label, ok, detail) =>
              checks.push({ scenario: scenario.id, round, contender, label, ok, detail }),
            skip: (contender, reason) => skips.push({ scenario: scenario.id, contender, reason }),
            log: (message) => log(`  ${message}`),
          });
        } catch (error) {
          const message = `${scenario.id} round ${round}: ${(error as Error).stack ?? String(error)}`;
          errors.push(message);
          checks.push({
            scenario: scenario.id,
            round,
            contender: "-",
            label: "scenario completed",
            ok: false,
            detail: (error as Error).message,
          });
          log(`  FAILED: ${message}`);
        }
        log(`  (${Math.round(performance.now() - scenarioStarted)} ms)`);
      }
    }
  } finally {
    await services.close();
  }
  const input: ReportInput = {
    scenarios,
    sizes,
    samples,
    checks,
    skips,
    errors,
    command: options.command ?? (options.smoke ? "npm run bench:smoke" : "npm run bench"),
    versions: services.versions,
    startedAt,
    durationMs: performance.now() - started,
    loadBefore,
  };
  const markdown = renderMarkdown(input);
  if (options.out) {
    const previous = await readFile(options.out, "utf8").catch(() => undefined);
    await writeFile(options.out, keepAbSection(previous, markdown));
  }
  return { samples, checks, skips, errors, table: renderConsole(input), markdown, durationMs: input.durationMs };
}
