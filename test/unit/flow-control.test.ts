import { describe, expect, it } from "vitest";
import { z } from "zod";
import { FUNCTION_WIDE_TOKEN, groupFunction, keyToken, limitToken, slotGroup } from "../../runtime/flow/flow-key";
import { describeFlow, resolveFlow } from "../../runtime/flow/flow-options";
import { readWoken, wokenHeader } from "../../runtime/flow/wake-tag";
import { defineFunction, resolveFunction } from "../../runtime/sdk/define-function";
import type { JetfnError } from "../../runtime/support/errors";

describe("resolveFlow", () => {
  it("resolves a concurrency limit and a rate limit, in that order", () => {
    const key = (input: { tenant: string }) => input.tenant;
    const flow = resolveFlow({ limit: 2, key } as never, { limit: 10, period: "1m" } as never);
    expect(flow?.limits.map(({ kind, limit, periodMs }) => ({ kind, limit, periodMs }))).toEqual([
      { kind: "c", limit: 2, periodMs: 0 },
      { kind: "r", limit: 10, periodMs: 60_000 },
    ]);
    expect(flow?.limits[0]?.key).toBe(key);
    expect(resolveFlow(undefined, undefined)).toBeUndefined();
  });

  it.each([
    [{ limit: 0 }, undefined, /concurrencyLimit.limit must be an integer from 1 to 1000/],
    [{ limit: 1.5 }, undefined, /concurrencyLimit.limit/],
    [{ limit: 2, key: "tenant" }, undefined, /concurrencyLimit.key must be a function/],
    [5, undefined, /concurrencyLimit must be an object/],
    [undefined, { limit: 5 }, /rateLimit.period/],
    [undefined, { limit: 5, period: "10ms" }, /from 100ms to 1d/],
    [undefined, { limit: 5, period: "2d" }, /from 100ms to 1d/],
    [undefined, { limit: 1_001, period: "1s" }, /rateLimit.limit/],
  ])("refuses %j / %j", (concurrency, rate, message) => {
    expect(() => resolveFlow(concurrency as never, rate as never)).toThrow(message);
  });
});

describe("limit keys", () => {
  const [perTenant] =
    resolveFlow({ limit: 1, key: (input: { tenant: unknown }) => input.tenant } as never, undefined)?.limits ?? [];

  it("shows short keys as they are and hashes the others, so no key leaves its subject token", () => {
    expect(keyToken("acme-1")).toBe("k_acme-1");
    expect(keyToken("a.b")).toMatch(/^h_[0-9a-f]{32}$/);
    expect(keyToken("*")).toMatch(/^h_[0-9a-f]{32}$/);
    expect(keyToken(">")).not.toBe(keyToken("*"));
    expect(keyToken("x".repeat(65))).toMatch(/^h_/);
  });

  it("fails a job whose key function throws or gives no usable key, naming the key function", () => {
    const limit = perTenant as NonNullable<typeof perTenant>;
    expect(limitToken(limit, { tenant: 7 })).toBe("k_7");
    const refused = (input: unknown) => {
      try {
        limitToken(limit, input);
      } catch (error) {
        return { code: (error as JetfnError).code, message: (error as Error).message };
      }
      return undefined;
    };
    expect(refused({ tenant: {} })).toEqual({
      code: "E_FLOW_KEY_INVALID",
      message: "concurrencyLimit.key returned object; it must return a non-empty string or a finite number",
    });
    expect(refused({ tenant: "" })?.message).toContain("returned an empty string");
    expect(refused({ tenant: Number.NaN })?.message).toContain("returned NaN");
    expect(refused(null)).toEqual({
      code: "E_FLOW_KEY_INVALID",
      message: expect.stringMatching(/^concurrencyLimit\.key threw on this job's input: .*null/),
    });
    const [wide] = resolveFlow({ limit: 3 } as never, undefined)?.limits ?? [];
    expect(limitToken(wide as NonNullable<typeof wide>, { tenant: "a" })).toBe(FUNCTION_WIDE_TOKEN);
  });

  it("names the function of a group, dots included", () => {
    const limit = perTenant as NonNullable<typeof perTenant>;
    const group = slotGroup("billing.charge", limit, "k_acme");
    expect(group).toBe("c.k_acme.billing.charge");
    expect(groupFunction(group)).toBe("billing.charge");
    expect(groupFunction("r._.send-mail")).toBe("send-mail");
  });
});

describe("woken jobs' tags", () => {
  const job = { attemptsBefore: 2, enqueuedAt: 1_700_000_000_000 };
  const header = wokenHeader("secret", "send-mail", "job-00000001", job);

  it("verify for the job they were written for", () => {
    expect(readWoken("secret", "send-mail", "job-00000001", header)).toEqual(job);
  });

  it("do not verify when a client forges or moves them (another id, function, attempt count or secret)", () => {
    expect(readWoken("secret", "send-mail", "job-00000002", header)).toBeUndefined();
    expect(readWoken("secret", "other", "job-00000001", header)).toBeUndefined();
    expect(readWoken("other", "send-mail", "job-00000001", header)).toBeUndefined();
    expect(readWoken("secret", "send-mail", "job-00000001", header.replace(/^2\./, "9."))).toBeUndefined();
    expect(readWoken("secret", "send-mail", "job-00000001", "2.1700000000000.AAAAAAAAAAAAAAAAAAAAAA")).toBeUndefined();
    expect(readWoken("secret", "send-mail", "job-00000001", "garbage")).toBeUndefined();
    expect(readWoken("secret", "send-mail", "job-00000001", undefined)).toBeUndefined();
  });
});

describe("defineFunction with limits, checked at deploy", () => {
  const valid = { input: z.object({ tenant: z.string() }), async handler() {} };
  const resolve = (spec: Record<string, unknown>) =>
    resolveFunction("demo", "/functions/demo.ts", 1, defineFunction(spec as never));

  it("resolves both limits; a function without them has none", () => {
    const fn = resolve({ ...valid, concurrencyLimit: { limit: 2 }, rateLimit: { limit: 5, period: "1s" } });
    expect(fn.flow?.limits.map((limit) => limit.kind)).toEqual(["c", "r"]);
    expect(describeFlow(fn.flow)).toEqual(["concurrency 2", "rate 5/1.0s"]);
    expect(resolve(valid).flow).toBeUndefined();
  });

  it("refuses a bad limit, naming it, and limits on an event listener", () => {
    expect(() => resolve({ ...valid, concurrencyLimit: { limit: 0 } })).toThrow(
      "function demo (/functions/demo.ts): option concurrencyLimit.limit must be an integer from 1 to 1000, got 0",
    );
    expect(() => resolve({ ...valid, on: "comment.created", rateLimit: { limit: 1, period: "1s" } })).toThrow(
      "options concurrencyLimit and rateLimit do not work with on yet",
    );
  });
});
