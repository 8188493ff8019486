import { Writable } from "node:stream";
import { expect, it } from "vitest";
import { bounded, budgetedLogger, LogBudget, noteDroppedLines, TRUNCATED } from "../../runtime/support/log-budget";
import { createLogger } from "../../runtime/support/logger";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { root: createLogger({ level: "info", destination }), lines };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

it("cuts long strings and leaves out fields past the line limit, with a marker", () => {
  expect(bounded("x".repeat(50), 10).value).toBe(`${"x".repeat(10)}${TRUNCATED}`);
  const many = Object.fromEntries(Array.from({ length: 100 }, (_, n) => [`field${n}`, "value"]));
  const cut = bounded(many, 100).value as Record<string, unknown>;
  expect(Object.keys(cut).length).toBeLessThan(20);
  expect(cut["…"]).toBe(TRUNCATED);
  expect(
    (
      bounded(
        Array.from({ length: 10_000 }, () => 1),
        100,
      ).value as unknown[]
    ).length,
  ).toBeLessThan(20);
});

it("keeps an error an error, with its message and stack cut to size", async () => {
  const { root, lines } = capture();
  const log = budgetedLogger(root, new LogBudget({ lines: 10, bytes: 100_000, lineBytes: 1_000 }));
  log.error({ err: new Error("y".repeat(5_000)) }, "failed");
  await settle();
  const err = lines[0]?.err as { type: string; message: string; stack: string };
  expect(err.type).toBe("Error");
  expect(err.message).toContain(TRUNCATED);
  expect(err.message.length).toBeLessThan(1_100);
});

it("drops lines past the budget, its children's too, and counts them", async () => {
  const { root, lines } = capture();
  const budget = new LogBudget({ lines: 3, bytes: 100_000, lineBytes: 1_000 });
  const log = budgetedLogger(root, budget);
  const child = log.child({ step: "x" });
  for (let n = 0; n < 5; n++) log.info({ n }, "line");
  for (let n = 0; n < 5; n++) child.info("child line");
  log.debug("below the level: neither written nor counted");
  noteDroppedLines(child, 4);
  await settle();
  expect(lines.map((line) => line.n)).toEqual([0, 1, 2]);
  expect({ lines: budget.lines, dropped: budget.dropped }).toEqual({ lines: 3, dropped: 11 });
});
