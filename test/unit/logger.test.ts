import { Writable } from "node:stream";
import { describe, expect, it, vi } from "vitest";
import { createLogger, invocationLogger } from "../../runtime/support/logger";

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

describe("secret redaction", () => {
  const settle = () => new Promise((resolve) => setImmediate(resolve));

  it("hides secrets at the top of a line and one level down, without touching the caller's objects", async () => {
    const { root, lines } = capture("info");
    const config = { databaseUrl: "postgres://u:p@h/db", nats: { token: "t0k", url: "nats://h" }, name: "x" };
    root.info({ password: "hunter2", config, deep: { a: { secret: "kept at depth 2" } } }, "starting");
    await settle();
    expect(lines[0]).toMatchObject({
      password: "[redacted]",
      config: { databaseUrl: "[redacted]", nats: { token: "t0k", url: "nats://h" }, name: "x" },
      deep: { a: { secret: "kept at depth 2" } },
      msg: "starting",
    });
    expect(config.databaseUrl).toBe("postgres://u:p@h/db");
  });

  it("hides secrets in child bindings and in an error's own fields, keeping the error's message and stack", async () => {
    const { root, lines } = capture("info");
    const error = Object.assign(new Error("login failed"), { authorization: "Bearer abc", code: "E_X" });
    root
      .child({ token: "child-token", fn: "f" })
      .child({ db: { password: "pw", host: "h" } })
      .error({ err: error }, "failed");
    invocationLogger(root, "g", "inv-3", 1).warn({ request: { authorization: "Basic xyz" } }, "refused");
    await settle();
    expect(lines[0]).toMatchObject({
      token: "[redacted]",
      fn: "f",
      db: { password: "[redacted]", host: "h" },
      err: { type: "Error", message: "login failed", authorization: "[redacted]", code: "E_X" },
    });
    expect(String((lines[0]?.err as { stack?: string } | undefined)?.stack)).toContain("login failed");
    expect(lines[1]).toMatchObject({ fn: "g", request: { authorization: "[redacted]" } });
    expect(error.authorization).toBe("Bearer abc");
  });

  it("censors frozen objects and getters too, and passes big buffers through untouched", async () => {
    const { root, lines } = capture("info");
    const frozen = Object.freeze({ password: "p", user: "u" });
    const withGetter = {
      get token() {
        return "t";
      },
    };
    const buffer = Buffer.alloc(1_000_000);
    root.info({ frozen, withGetter, sizes: { bytes: buffer.length } }, "line");
    root.info({ nested: { buffer } }, "buffer");
    await settle();
    expect(lines[0]).toMatchObject({
      frozen: { password: "[redacted]", user: "u" },
      withGetter: { token: "[redacted]" },
      sizes: { bytes: 1_000_000 },
    });
    expect(frozen.password).toBe("p");
    expect(lines[1]?.msg).toBe("buffer");
  });

  it("logs an error whose getters throw (handler code's) with its message and stack, instead of throwing", async () => {
    const { root, lines } = capture("info");
    const throwing = () => {
      throw new Error("getter threw");
    };
    const plain = Object.defineProperty(new Error("odd error"), "detail", { enumerable: true, get: throwing });
    const secret = Object.defineProperty(Object.assign(new Error("odd secret"), { token: "t" }), "detail", {
      enumerable: true,
      get: throwing,
    });
    expect(() => root.error({ err: plain }, "plain")).not.toThrow();
    expect(() => root.error({ err: secret }, "secret")).not.toThrow();
    await settle();
    expect(lines).toMatchObject([
      { msg: "plain", err: { type: "Error", message: "odd error", stack: expect.stringContaining("odd error") } },
      {
        msg: "secret",
        err: { message: "odd secret", token: "[redacted]", stack: expect.stringContaining("odd secret") },
      },
    ]);
  });
});
