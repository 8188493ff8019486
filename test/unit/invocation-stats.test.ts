import { describe, expect, it } from "vitest";
import { trackInvocationStats } from "../../runtime/invocation/invocation-stats";
import {
  emptyHistogram,
  histogramQuantile,
  mergeHistogram,
  recordDuration,
  summarizeDurations,
} from "../../runtime/support/duration-histogram";
import { errorKindOf } from "../../runtime/support/error-codes";
import { JetfnError, NonRetryableError } from "../../runtime/support/errors";
import { createEmitter, type InvocationEvent } from "../../runtime/triggers/events";

function event(fn: string, invocationId: string, kind: "call" | "job" = "job", attempt = 1): InvocationEvent {
  return { fn, invocationId, attempt, kind };
}

describe("trackInvocationStats", () => {
  it("counts calls, jobs, successes, failures by kind, retries, dead and in flight", () => {
    const events = createEmitter();
    const stats = trackInvocationStats(events);
    events.emit("invocation:start", event("mail", "c1", "call"));
    events.emit("invocation:success", { ...event("mail", "c1", "call"), durationMs: 10 });
    events.emit("invocation:start", event("mail", "j1"));
    events.emit("invocation:failure", {
      ...event("mail", "j1"),
      durationMs: 20,
      error: new JetfnError("E_HANDLER_TIMEOUT", "too slow"),
      final: false,
    });
    events.emit("invocation:start", event("mail", "j1", "job", 2));
    events.emit("invocation:failure", {
      ...event("mail", "j1", "job", 2),
      durationMs: 30,
      error: new NonRetryableError("no such customer"),
      final: true,
    });
    events.emit("invocation:start", event("mail", "j2"));
    const mail = stats.get("mail");
    expect(mail).toMatchObject({
      requests: 4,
      calls: 1,
      jobs: 3,
      succeeded: 1,
      errors: 2,
      errorsByKind: { timeout: 1, non_retryable: 1, handler_error: 0, invalid_input: 0, other: 0 },
      lastError: "E_NON_RETRYABLE: no such customer",
      retries: 1,
      dead: 1,
      inFlight: 1,
      processingTimeMs: 60,
      completedLastMinute: 3,
    });
    expect(mail.duration.mean).toBe(20);
    expect(mail.duration.max).toBe(30);
    expect(stats.served).toBe(3);
    stats.close();
    events.emit("invocation:start", event("mail", "j3"));
    expect(stats.get("mail").requests).toBe(4);
  });

  it("a call failing does not count as a dead job", () => {
    const events = createEmitter();
    const stats = trackInvocationStats(events);
    events.emit("invocation:start", event("add", "c1", "call"));
    events.emit("invocation:failure", {
      ...event("add", "c1", "call"),
      durationMs: 1,
      error: new JetfnError("E_INPUT_INVALID", "bad"),
      final: true,
    });
    expect(stats.get("add")).toMatchObject({ dead: 0, retries: 0, errorsByKind: { invalid_input: 1 }, inFlight: 0 });
  });

  it("the rate covers the last minute only", () => {
    let now = 1_000_000;
    const events = createEmitter();
    const stats = trackInvocationStats(events, () => now);
    now += 120_000;
    for (let i = 0; i < 30; i++) events.emit("invocation:success", { ...event("f", `a${i}`), durationMs: 1 });
    expect(stats.get("f")).toMatchObject({ completedLastMinute: 30, ratePerSecond: 0.5 });
    now += 61_000;
    events.emit("invocation:success", { ...event("f", "late"), durationMs: 1 });
    expect(stats.get("f")).toMatchObject({ completedLastMinute: 1 });
  });

  it("classifies error codes into kinds", () => {
    expect(errorKindOf("E_INPUT_INVALID")).toBe("invalid_input");
    expect(errorKindOf("E_HANDLER_FAILED")).toBe("handler_error");
    expect(errorKindOf("E_OUTPUT_INVALID")).toBe("handler_error");
    expect(errorKindOf("E_HANDLER_TIMEOUT")).toBe("timeout");
    expect(errorKindOf("E_NON_RETRYABLE")).toBe("non_retryable");
    expect(errorKindOf("E_DATABASE_UNAVAILABLE")).toBe("other");
  });
});

describe("duration histograms", () => {
  it("estimate median and p99 within the bucket width, and merge exactly", () => {
    const first = emptyHistogram();
    const second = emptyHistogram();
    for (let ms = 1; ms <= 500; ms++) recordDuration(first, ms);
    for (let ms = 501; ms <= 1_000; ms++) recordDuration(second, ms);
    mergeHistogram(first, second);
    expect(histogramQuantile(first, 0.5)).toBeGreaterThan(500 * 0.9);
    expect(histogramQuantile(first, 0.5)).toBeLessThan(500 * 1.1);
    expect(histogramQuantile(first, 0.99)).toBeGreaterThan(990 * 0.9);
    expect(histogramQuantile(first, 0.99)).toBeLessThan(990 * 1.1);
    const summary = summarizeDurations(first, 500_500, 1_000, 1_000);
    expect(summary).toMatchObject({ count: 1_000, mean: 500.5, max: 1_000 });
    expect(summary.p99).toBeLessThanOrEqual(1_000);
  });

  it("refuses to merge histograms of another shape", () => {
    expect(() => mergeHistogram(emptyHistogram(), { base_ms: 1, factor: 2, buckets: {} })).toThrow(/cannot merge/);
  });
});
