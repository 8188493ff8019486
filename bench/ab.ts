// `npm run bench:ab -- <before> <after> [--rounds N] [--set size=N,...]`: an A/B run of two
// commits' job paths (docs/benchmarks.md). Each commit gets a worktree and an install of its own
// (driver patches differ between commits), the two take turns (each round the other goes first),
// jetfn alone in the insert and no-op scenarios; the medians, ranges and ratios come out as a table
// for BENCHMARKS.md. Run it with nothing else on the machine.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs, promisify } from "node:util";
import { abRows, abTable, jetfnFigures, type RunFigures } from "./ab-figures";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: "string", default: "6" },
    set: { type: "string", default: "insertJobs=10000,noopJobs=20000" },
    help: { type: "boolean", default: false },
  },
});
if (values.help || positionals.length !== 2) {
  process.stdout.write(
    "usage: npm run bench:ab -- <before-commit> <after-commit> [--rounds 6] [--set insertJobs=10000,noopJobs=20000]\n",
  );
  process.exit(values.help ? 0 : 2);
}
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`--rounds must be a whole number of at least 1, not ${values.rounds}`);

const exec = promisify(execFile);

/** Runs a command; its output, or a rejection naming the command and its stderr on a non-zero exit. */
async function run(command: string, args: string[], cwd: string): Promise<string> {
  return (await exec(command, args, { cwd, maxBuffer: 64 * 1024 * 1024 })).stdout;
}

const repository = (await run("git", ["rev-parse", "--show-toplevel"], process.cwd())).trim();
const sides = await Promise.all(
  positionals.map(async (ref, index) => ({
    name: index === 0 ? "before" : "after",
    ref,
    commit: (await run("git", ["rev-parse", "--verify", `${ref}^{commit}`], repository)).trim(),
    dir: "",
    runs: [] as RunFigures[],
  })),
);
const work = await mkdtemp(path.join(tmpdir(), "jetfn-ab-"));
let stopping = false;
process.once("SIGINT", () => {
  stopping = true;
  process.stderr.write("SIGINT: stopping after the current run, then removing the worktrees.\n");
});

try {
  for (const side of sides) {
    side.dir = path.join(work, side.name);
    process.stderr.write(`${side.name}: ${side.ref} (${side.commit.slice(0, 7)}): worktree and install\n`);
    await run("git", ["worktree", "add", "--detach", side.dir, side.commit], repository);
    await run("npm", ["ci", "--no-audit", "--no-fund"], side.dir);
    await run("npm", ["run", "types"], side.dir);
  }
  for (let round = 1; round <= rounds && !stopping; round++) {
    const order = round % 2 === 1 ? sides : [...sides].reverse();
    for (const side of order) {
      const out = path.join(work, `${side.name}-${round}.md`);
      const args = ["run", "bench", "--", "--only", "insert-jobs,noop-jobs", "--contenders", "jetfn"];
      await run("npm", [...args, "--rounds", "1", "--set", values.set as string, "--out", out], side.dir);
      const figures = jetfnFigures(await readFile(out, "utf8"));
      side.runs.push(figures);
      const rate = (metric: string) => figures.get(metric)?.value.toLocaleString("en-US") ?? "n/a";
      process.stderr.write(
        `round ${round}/${rounds} ${side.name}: insert ${rate("insert-one-row jobs drained")} jobs/s, no-op ${rate("no-op jobs drained")} jobs/s\n`,
      );
    }
  }
  const [before, after] = sides as [(typeof sides)[0], (typeof sides)[0]];
  process.stdout.write(
    `Before: ${before.ref} (${before.commit.slice(0, 7)}); after: ${after.ref} (${after.commit.slice(0, 7)}); ${before.runs.length} round(s), alternating; each run \`npm run bench -- --only insert-jobs,noop-jobs --contenders jetfn --rounds 1 --set ${values.set}\`.\n\n`,
  );
  process.stdout.write(`${abTable(abRows(before.runs, after.runs))}\n`);
} finally {
  for (const side of sides) {
    if (side.dir) await run("git", ["worktree", "remove", "--force", side.dir], repository).catch(() => undefined);
  }
  await rm(work, { recursive: true, force: true });
}
