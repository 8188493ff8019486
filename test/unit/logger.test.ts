import { Writable } from "node:stream";
import { describe, expect, it, vi } from "vitest";
import { createLogger, invocationLogger } from "../../runtime/logger";

function capture(level: string) {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { root: createLogger({ level, destination }), lines };
}

describe("invocationLogger", () => {
  it("writes lines carrying the function, invocation id and attempt", async () => {
    const { root, lines } = capture("info");
    const log = invocationLogger(root, "billing.charge", "inv-1", 2);
    log.info({ durationMs: 3 }, "Job succeeded.");
    log.child({ step: "x" }).warn("careful");
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toMatchObject([
      { fn: "billing.charge", invocationId: "inv-1", attempt: 2, durationMs: 3, msg: "Job succeeded." },
      { fn: "billing.charge", invocationId: "inv-1", attempt: 2, step: "x", msg: "careful" },
    ]);
  });

  it("makes no child logger while nothing is written at an enabled level", () => {
    const { root } = capture("warn");
    const child = vi.spyOn(root, "child");
    const log = invocationLogger(root, "f", "inv-2", 1);
    log.info("not written");
    log.debug("not written");
    expect(child).not.toHaveBeenCalled();
    log.warn("written");
    expect(child).toHaveBeenCalledTimes(1);
    log.error("again");
    expect(log.isLevelEnabled("info")).toBe(false);
    expect(child).toHaveBeenCalledTimes(1);
  });
});
