import { cpus, loadavg, release, totalmem, type } from "node:os";
import { CPU_FIGURES, cpuBudget } from "./cpu-use";
import type { BenchSizes, Check, Direction, Sample, Scenario, Skip, Target } from "./model";
import { formatNumber, formatRatio, median } from "./stats";

/** The medians of one contender on one metric. */
export interface Summary {
  scenario: string;
  metric: string;
  contender: string;
  unit: string;
  better: Direction;
  median: number;
  min: number;
  max: number;
  samples: number;
  /** The value of each round, by round number. */
  byRound?: ReadonlyMap<number, number>;
}

/** A target with the figure it was judged on. */
export interface TargetResult {
  target: Target;
  /** The ratio (or absolute figure) compared with the target. */
  figure: number;
  /** The baseline the ratio used (the best one for `best-peer`). */
  against: string | undefined;
  met: boolean;
  note: string;
}

/** Everything the report is made from. */
export interface ReportInput {
  scenarios: readonly Scenario[];
  sizes: BenchSizes;
  samples: readonly Sample[];
  checks: readonly Check[];
  skips: readonly Skip[];
  errors: readonly string[];
  command: string;
  versions: Record<string, string>;
  startedAt: Date;
  durationMs: number;
  loadBefore: number[];
}

/** Groups samples per (scenario, metric, contender) into median, min and max. */
export function summarize(samples: readonly Sample[]): Summary[] {
  const groups = new Map<string, Sample[]>();
  for (const sample of samples) {
    const key = `${sample.scenario}\u0000${sample.metric}\u0000${sample.contender}`;
    const group = groups.get(key) ?? [];
    group.push(sample);
    groups.set(key, group);
  }
  return [...groups.values()].map((group) => {
    const first = group[0] as Sample;
    const values = group.map((sample) => sample.value);
    return {
      scenario: first.scenario,
      metric: first.metric,
      contender: first.contender,
      unit: first.unit,
      better: first.better,
      median: median(values),
      min: Math.min(...values),
      max: Math.max(...values),
      samples: values.length,
      byRound: new Map(group.map((sample) => [sample.round, sample.value])),
    };
  });
}

/** Judges every target against the medians; a missed drain rate also gets its CPU budget. */
export function judgeTargets(
  targets: readonly Target[],
  summaries: readonly Summary[],
  cores = cpus().length,
): TargetResult[] {
  const find = (scenario: string, metric: string, contender: string): Summary | undefined =>
    findSummary(summaries, scenario, metric, contender);
  return targets.map((target) => {
    const own = find(target.scenario, target.metric, target.contender);
    if (!own) return { target, figure: Number.NaN, against: undefined, met: false, note: "not measured" };
    let figure = own.median;
    let against: Summary | undefined;
    const notes: string[] = [];
    if (target.kind !== "absolute") {
      const baselines = target.baselines
        .map((name) => find(baselineScenario(target), baselineMetric(target), name))
        .filter((summary): summary is Summary => summary !== undefined);
      const worst = target.everyRound ? worstRound(target, own, baselines) : undefined;
      if (baselines.length === 0 || (target.everyRound && !worst)) {
        return { target, figure: Number.NaN, against: undefined, met: false, note: "no baseline measured" };
      }
      if (worst) {
        ({ figure, against } = worst);
        notes.push(`worst of ${worst.rounds} rounds: round ${worst.round}`);
      } else {
        against = best(baselines, own.better, (summary) => summary.median);
        figure = own.median / against.median;
      }
    }
    const met =
      (target.min === undefined || figure >= target.min) && (target.max === undefined || figure <= target.max);
    const missing = target.baselines.filter((name) => !find(baselineScenario(target), baselineMetric(target), name));
    if (missing.length > 0) notes.push(`not measured here: ${missing.join(", ")}`);
    const budget = met
      ? undefined
      : (budgetNote(summaries, target, own, against, cores) ?? limitNote(target, own, against));
    if (budget) notes.push(budget);
    return { target, figure, against: against?.contender, met, note: notes.join("; ") };
  });
}

/** The better of `summaries` by `value` (higher or lower, as `better` says). */
function best(summaries: readonly Summary[], better: Direction, value: (summary: Summary) => number): Summary {
  return summaries.reduce((a, b) => ((better === "higher" ? value(b) > value(a) : value(b) < value(a)) ? b : a));
}

/**
 * For a target judged in every round: each round's ratio of `own` to that round's best baseline, and
 * the round where it fared worst (undefined when no round has both).
 */
function worstRound(
  target: Target,
  own: Summary,
  baselines: readonly Summary[],
): { figure: number; against: Summary; round: number; rounds: number } | undefined {
  let worst: { figure: number; against: Summary; round: number } | undefined;
  let rounds = 0;
  for (const [round, value] of own.byRound ?? []) {
    const measured = baselines.filter((summary) => summary.byRound?.has(round));
    if (measured.length === 0) continue;
    rounds++;
    const against = best(measured, own.better, (summary) => summary.byRound?.get(round) as number);
    const figure = value / (against.byRound?.get(round) as number);
    // Worse: a lower ratio for a minimum, a higher one for a maximum.
    const worse =
      target.min !== undefined ? figure < (worst?.figure ?? Infinity) : figure > (worst?.figure ?? -Infinity);
    if (worse) worst = { figure, against, round };
  }
  return worst && { ...worst, rounds };
}

function baselineScenario(target: Target): string {
  return target.baselineScenario ?? target.scenario;
}

function baselineMetric(target: Target): string {
  return target.baselineMetric ?? target.metric;
}

function findSummary(
  summaries: readonly Summary[],
  scenario: string,
  metric: string,
  contender: string,
): Summary | undefined {
  return summaries.find((s) => s.scenario === scenario && s.metric === metric && s.contender === contender);
}

/**
 * For a missed minimum on a drain rate (a metric with CPU figures): the CPU per job that rate
 * allows on this machine (see cpuBudget), against what the contender spends.
 */
function budgetNote(
  summaries: readonly Summary[],
  target: Target,
  own: Summary,
  against: Summary | undefined,
  cores: number,
): string | undefined {
  if (target.min === undefined || own.better !== "higher") return undefined;
  const cpu = (figure: string) =>
    findSummary(summaries, target.scenario, `${target.metric}: ${figure}`, target.contender)?.median;
  const [node, postgres, busy] = [cpu(CPU_FIGURES.node), cpu(CPU_FIGURES.postgres), cpu(CPU_FIGURES.busy)];
  if (node === undefined || postgres === undefined || busy === undefined) return undefined;
  const servers = postgres + (cpu(CPU_FIGURES.nats) ?? 0) + (cpu(CPU_FIGURES.redis) ?? 0);
  const rate = target.min * (against?.median ?? 1);
  const budget = cpuBudget(rate, cores, busy, node + servers);
  return `at ${Math.round(busy)} % of ${cores} cores, ${formatNumber(rate)} ${own.unit} allows ${formatNumber(budget.allowedUs)} µs of CPU per job; ${target.contender} spends ${formatNumber(budget.spentUs)} µs (${formatRatio(budget.over)} the budget)`;
}

/**
 * For a missed maximum (a cost, such as CPU per job): what the target allows against what the
 * contender spends, in the figure's unit.
 */
function limitNote(target: Target, own: Summary, against: Summary | undefined): string | undefined {
  if (target.max === undefined || own.better !== "lower") return undefined;
  const allowed = target.max * (against?.median ?? 1);
  return `the target allows ${formatNumber(allowed)} ${own.unit}; ${target.contender} spends ${formatNumber(own.median)} ${own.unit} (${formatRatio(own.median / allowed)} the limit)`;
}

function targetText(target: Target): string {
  const bound = [target.min !== undefined ? `>= ${target.min}` : "", target.max !== undefined ? `<= ${target.max}` : ""]
    .filter(Boolean)
    .join(" and ");
  if (target.kind === "absolute") return `${bound}`;
  const of = target.kind === "best-peer" ? `best of ${target.baselines.join(", ")}` : target.baselines.join(", ");
  const elsewhere =
    target.baselineScenario || target.baselineMetric
      ? ` (${baselineScenario(target)} / ${baselineMetric(target)})`
      : "";
  const when = target.everyRound ? ", in every round" : "";
  return `${bound.replace(/(\d+(\.\d+)?)/g, "$1x")} ${of}${elsewhere}${when}`;
}

function ratiosText(summary: Summary, summaries: readonly Summary[], baselinesOf: Record<string, string[]>): string {
  const baselines = baselinesOf[summary.metric] ?? [];
  if (baselines.includes(summary.contender)) return "baseline";
  return baselines
    .map((name) =>
      summaries.find((s) => s.scenario === summary.scenario && s.metric === summary.metric && s.contender === name),
    )
    .filter((baseline): baseline is Summary => baseline !== undefined)
    .map((baseline) => `${formatRatio(summary.median / baseline.median)} ${baseline.contender}`)
    .join(", ");
}

function table(headers: string[], rows: string[][]): string {
  const escapeCell = (cell: string): string => cell.replace(/\|/g, "\\|");
  return [
    `| ${headers.join(" | ")} |`,
    `| ${headers.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.map(escapeCell).join(" | ")} |`),
  ].join("\n");
}

function resultRows(input: ReportInput, summaries: readonly Summary[]): string[][] {
  const rows: string[][] = [];
  for (const scenario of input.scenarios) {
    const baselines = typeof scenario.baselines === "function" ? scenario.baselines(input.sizes) : scenario.baselines;
    for (const summary of summaries.filter((s) => s.scenario === scenario.id)) {
      rows.push([
        scenario.title,
        summary.metric,
        summary.contender,
        `${formatNumber(summary.median)} ${summary.unit}`,
        summary.samples > 1 ? `${formatNumber(summary.min)}-${formatNumber(summary.max)}` : "",
        summary.better === "higher" ? "higher" : "lower",
        ratiosText(summary, summaries, baselines),
      ]);
    }
  }
  return rows;
}

const RESULT_HEADERS = ["scenario", "metric", "contender", "median", "min-max", "better", "ratio vs baselines"];

/** The compact table printed at the end of a run. */
export function renderConsole(input: ReportInput): string {
  const summaries = summarize(input.samples);
  const targets = judgeTargets(allTargets(input), summaries);
  const lines = [
    table(RESULT_HEADERS, resultRows(input, summaries)),
    "",
    ...scenarioSections(input, summaries),
    "Targets:",
  ];
  for (const result of targets) lines.push(`  ${targetLine(result)}`);
  const failed = input.checks.filter((check) => !check.ok);
  lines.push("", `Checks: ${input.checks.length - failed.length}/${input.checks.length} passed`);
  for (const check of input.checks) {
    lines.push(
      `  ${check.ok ? "ok  " : "FAIL"} [${check.scenario} r${check.round}] ${check.contender}: ${check.label} (${check.detail})`,
    );
  }
  for (const skip of uniqueSkips(input.skips))
    lines.push(`Skipped ${skip.contender} in ${skip.scenario}: ${skip.reason}`);
  for (const error of input.errors) lines.push(`ERROR ${error}`);
  return lines.join("\n");
}

/** The sections of the scenarios that have one and were measured: a heading, the text, a blank line. */
function scenarioSections(input: ReportInput, summaries: readonly Summary[]): string[] {
  return input.scenarios.flatMap((scenario) => {
    const own = summaries.filter((summary) => summary.scenario === scenario.id);
    if (!scenario.section || own.length === 0) return [];
    return [`## ${scenario.title}`, "", scenario.section(own, input.sizes), ""];
  });
}

function targetLine(result: TargetResult): string {
  const { target } = result;
  const figure = target.kind === "absolute" ? formatNumber(result.figure) : formatRatio(result.figure);
  const against = result.against ? ` vs ${result.against}` : "";
  const verdict = Number.isNaN(result.figure) ? "NOT MEASURED" : result.met ? "met" : "MISSED";
  return `${verdict}: ${target.scenario} / ${target.metric} / ${target.contender}: ${figure}${against} (target ${targetText(target)}: ${target.reason})${result.note ? ` - ${result.note}` : ""}`;
}

function allTargets(input: ReportInput): Target[] {
  return input.scenarios.flatMap((scenario) =>
    typeof scenario.targets === "function" ? scenario.targets(input.sizes) : scenario.targets,
  );
}

function uniqueSkips(skips: readonly Skip[]): Skip[] {
  const seen = new Set<string>();
  return skips.filter((skip) => {
    const key = `${skip.scenario}/${skip.contender}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** BENCHMARKS.md: results, targets, checks, and how and where they were measured. */
export function renderMarkdown(input: ReportInput): string {
  const summaries = summarize(input.samples);
  const targets = judgeTargets(allTargets(input), summaries);
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const failed = input.checks.filter((check) => !check.ok);
  const sections = [
    "# Benchmarks",
    "",
    "Generated by the benchmark harness in `bench/`; do not edit by hand, except the A/B runs at the end",
    "(kept across runs). jetfn and its peers run side by side",
    "on the same machine in one run, on the same jobs, taking turns (a different contender goes first each",
    "round). Figures are the median over rounds, with the range; ratios are medians divided by the",
    "baseline's median (for rates higher is better, for times and latencies lower is better). The machine is",
    "shared, so absolute numbers drift; compare ratios within one run.",
    "",
    `Command: \`${input.command}\``,
    "",
    `Run: ${input.startedAt.toISOString()}, ${input.sizes.rounds} round(s), ${Math.round(input.durationMs / 1000)} s in all.`,
    "",
    "## Results",
    "",
    table(RESULT_HEADERS, resultRows(input, summaries)),
    "",
    ...scenarioSections(input, summaries),
    "## Targets",
    "",
    table(
      ["verdict", "scenario", "metric", "contender", "figure", "target", "why", "note"],
      targets.map((result) => [
        Number.isNaN(result.figure) ? "not measured" : result.met ? "met" : "**missed**",
        result.target.scenario,
        result.target.metric,
        result.target.contender,
        `${result.target.kind === "absolute" ? formatNumber(result.figure) : formatRatio(result.figure)}${result.against ? ` vs ${result.against}` : ""}`,
        targetText(result.target),
        result.target.reason,
        result.note,
      ]),
    ),
    "",
    "## Outcome checks",
    "",
    `${input.checks.length - failed.length} of ${input.checks.length} passed.`,
    "",
    table(
      ["scenario", "round", "contender", "check", "result", "detail"],
      input.checks.map((check) => [
        check.scenario,
        String(check.round),
        check.contender,
        check.label,
        check.ok ? "ok" : "**FAILED**",
        check.detail,
      ]),
    ),
    "",
  ];
  const skips = uniqueSkips(input.skips);
  if (skips.length > 0 || input.errors.length > 0) {
    sections.push("## Not measured", "");
    for (const skip of skips) sections.push(`- ${skip.contender} in ${skip.scenario}: ${skip.reason}.`);
    for (const error of input.errors) sections.push(`- Error: ${error}`);
    sections.push("");
  }
  sections.push(
    "## Machine, versions, settings",
    "",
    `- Machine: ${type()} ${release()}, ${cpus().length} x ${cpu}, ${Math.round(totalmem() / 1_073_741_824)} GB RAM; load average before ${input.loadBefore.map((n) => n.toFixed(2)).join(" ")}, after ${loadavg()
      .map((n) => n.toFixed(2))
      .join(" ")}.`,
    `- Versions: ${Object.entries(input.versions)
      .map(([name, version]) => `${name} ${version}`)
      .join(", ")}.`,
    `- Sizes: ${Object.entries(input.sizes)
      .map(([name, value]) => `${name}=${Array.isArray(value) ? value.join("/") : value}`)
      .join(", ")}.`,
    "- Services: one `nats-server -js` on loopback with a temporary file store; Postgres on 127.0.0.1:5432, each contender in a fresh database per round (jetfn's cloned from a migrated template, so the audit triggers are on); Redis on 127.0.0.1:6379 (or a `redis-server --save '' --appendonly no` started by the harness).",
    `- Every contender runs in the harness's own Node process (producer, workers and, for jetfn, the runtime), except scenario 6, which starts one child process per function count, and scenario 9 (opt-in), which runs each runtime in a child process of its own on a 3-node NATS cluster. Node flags: \`${process.execArgv.filter((flag) => flag.startsWith("--max-")).join(" ") || "none"}\` (\`npm run bench\` passes the young-generation size \`npx jetfn\` starts runtimes with; the children of scenarios 6 and 9 get it too).`,
    "- Drains: the queue is filled first (that fill is the batched enqueue rate), then the workers start; the drain time runs from the first job's start to the last job's end (jetfn: its `job:done` event, once the outcome is committed and the job acked; BullMQ: its `completed` event; graphile-worker and pg-boss: when the task function returns, before their batched completion is written, which favours them slightly).",
    "- jetfn: functions with `concurrency` 8 (64 for the request-reply function, to match 64 calls in flight), default pool of 20 Postgres connections, log level warn. Insert jobs run `ctx.db.execute(insert ...)` in the invocation's transaction, audited, with the invocation record committed together.",
    "- naive JetStream: a durable pull consumer, `consume()` with default options, `ack()` per message, nothing recorded.",
    "- graphile-worker: `run()` with concurrency 8, localQueue size 64, completeJobBatchDelay 0 (its documented batching); `addJobs` in batches of 1,000.",
    "- pg-boss: 8 `work()` workers with batchSize 8, pollingIntervalSeconds 0.5, supervise and schedule off; `insert` in batches of 1,000.",
    "- BullMQ: a Worker with concurrency 8, default job options; `addBulk` in batches of 1,000.",
    "- Peers' insert jobs run one autocommitted `insert` through postgres.js (pool of 8) per job. The \"+ guarantees\" peers do what their users would add by hand for jetfn's guarantees (`bench/contenders/peer-guarantees.ts`): each job in a postgres.js `sql.begin` that stamps the task's name and the job's id with `set_config`, writes an effects row keyed by the job's id (`on conflict do nothing`; a redelivered job finds it and skips the insert) and inserts the row under the textbook row-level jsonb audit trigger (`bench/naive-audit.ts`); checked for rows = jobs, no duplicates, audit rows = jobs with the task's stamp and a job id with an effects row, effects rows = jobs.",
    "- CPU per job (scenarios 2 and 3, how close a drain is to the machine's limit): CPU time over each drain call (the workers' start-up included), read from `/proc` (Linux only), of the harness's Node process (the workers and, for jetfn, the runtime), of Postgres (the backends connected to the contender's database, and the server's own processes such as the WAL writer and checkpointer; backends of other databases on the shared server are left out), of the harness's `nats-server` and of every `redis-server`, each reported apart; jobs per Postgres core-second = 1 s / Postgres CPU per job, the jobs one Postgres core would carry (what limits many runtimes sharing one Postgres); all cores busy = that CPU time / (wall time x cores). Near 100 % the drain is CPU-bound, and CPU per job sets its rate. A missed drain target says what CPU per job its rate allows at the contender's measured core use (cores x busy / rate), against what the contender spends (Node + Postgres + NATS + Redis): how much less work per job the target takes; a missed CPU target says what it allows against what is spent.",
    "- Audit overhead: `public.audit_bench` (jetfn audit triggers) vs `bench_plain.audit_bench` (identical, not audited), and identical tables with the two textbook audit triggers a team would write by hand (`bench/naive-audit.ts`: row-level, and statement-level over transition tables with an UPDATE's rows paired by key, both storing jsonb into a log with a bigserial key); single-row = `BEGIN; set_config x3; INSERT; COMMIT` over 8 connections, the contenders taking turns in 8 slices, timed and with the CPU of the pool's own backends (`/proc/<pid>/schedstat`, so neither the WAL writer nor autovacuum is counted); bulk = one statement each.",
    "- Audit reads: a log of `auditLogRows` rows written by 100 invocations of 10 functions (one table), sealed by the runtime's sealer (its rate is the sealing figure) but for a tail of 1,000 unsealed rows; each query is the SDK function behind `jetfn audit`, timed `auditQueryTrials` times, the median per round; each is checked for what it finds.",
    "",
  );
  return sections.join("\n");
}

/** Heading of BENCHMARKS.md's hand-written part: A/B runs of job-path changes, kept across full runs. */
export const AB_HEADING = "## A/B runs of job-path changes";

/** The generated report, followed by the hand-written A/B part of the previous file, if it had one. */
export function keepAbSection(previous: string | undefined, generated: string): string {
  const start = previous?.indexOf(`\n${AB_HEADING}\n`) ?? -1;
  if (previous === undefined || start < 0) return generated;
  return `${generated.trimEnd()}\n${previous.slice(start)}`;
}
