import { describe, expect, it } from "vitest";
import { ackWaitFor, backoffDelay, maxDeliveriesFor, resolveRetryPolicy } from "../../runtime/invocation/retry-policy";

describe("retry policy", () => {
  it("defaults to 3 attempts with a growing backoff", () => {
    const policy = resolveRetryPolicy();
    expect(policy).toEqual({ attempts: 3, backoffMs: [1_000, 10_000, 60_000] });
  });

  it("waits per failed attempt, repeating the last delay", () => {
    const policy = resolveRetryPolicy({ attempts: 6, backoff: ["1s", "10s"] });
    expect([1, 2, 3, 4, 5].map((attempt) => backoffDelay(policy, attempt))).toEqual([
      1_000, 10_000, 10_000, 10_000, 10_000,
    ]);
    expect(backoffDelay(resolveRetryPolicy({ backoff: "250ms" }), 2)).toBe(250);
  });

  it("names the bad field", () => {
    expect(() => resolveRetryPolicy({ attempts: 0 })).toThrow(
      "retry.attempts must be an integer from 1 to 1000, got 0",
    );
    expect(() => resolveRetryPolicy({ attempts: 2.5 })).toThrow("retry.attempts");
    expect(() => resolveRetryPolicy({ backoff: ["1s", "soon"] })).toThrow('retry.backoff[1]: "soon" is not a duration');
    expect(() => resolveRetryPolicy({ backoff: [] })).toThrow("at least one duration");
  });

  it("maps onto JetStream: one spare delivery, ack wait clamped to bring lost jobs back quickly", () => {
    expect(maxDeliveriesFor(resolveRetryPolicy({ attempts: 5 }))).toBe(6);
    expect(ackWaitFor(30_000, 10_000)).toBe(10_000);
    expect(ackWaitFor(3_000, 10_000)).toBe(3_000);
    expect(ackWaitFor(100, 10_000)).toBe(1_000);
    expect(ackWaitFor(5_000, 500)).toBe(1_000);
  });
});
