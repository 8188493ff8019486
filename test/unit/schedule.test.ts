import { describe, expect, it } from "vitest";
import { z } from "../../runtime";
import { defineFunction, resolveFunction } from "../../runtime/sdk/define-function";
import { dueTimesBetween, resolveSchedule } from "../../runtime/triggers/schedule";
import { scheduledJobId, scheduledJobKey } from "../../runtime/triggers/scheduled-job-id";

const at = (iso: string) => Date.parse(iso);

describe("schedules", () => {
  it("computes cron due times in a time zone", () => {
    const paris = resolveSchedule({ schedule: { cron: "30 8 * * *", timezone: "Europe/Paris" } });
    expect(new Date(paris?.nextAfter(at("2024-06-01T06:30:00Z")) as number).toISOString()).toBe(
      "2024-06-02T06:30:00.000Z",
    );
    expect(paris?.description).toBe("cron 30 8 * * * (Europe/Paris)");
    expect(paris?.catchUp).toBe("latest");
  });

  it("aligns `every` to the epoch and lists due times between two instants", () => {
    const every = resolveSchedule({ every: "5m", catchUp: "all" });
    expect(every?.nextAfter(at("2024-01-01T00:07:00Z"))).toBe(at("2024-01-01T00:10:00Z"));
    const due = dueTimesBetween(every as never, at("2024-01-01T00:00:00Z"), at("2024-01-01T00:20:00Z"), 10);
    expect(due.map((time) => new Date(time).toISOString().slice(11, 16))).toEqual(["00:05", "00:10", "00:15", "00:20"]);
    expect(dueTimesBetween(every as never, at("2024-01-01T00:00:00Z"), at("2024-01-01T00:20:00Z"), 1)).toEqual([
      at("2024-01-01T00:20:00Z"),
    ]);
  });

  it("refuses bad schedules with the option's name", () => {
    expect(() => resolveSchedule({ schedule: "* * * *" })).toThrow(/5 fields/);
    expect(() => resolveSchedule({ schedule: { cron: "0 * * * *", timezone: "Mars/Olympus" } })).toThrow(/time zone/);
    expect(() => resolveSchedule({ every: "10ms" })).toThrow(/at least 1s/);
    expect(() => resolveSchedule({ every: "1m", schedule: "* * * * *" })).toThrow(/cannot be combined/);
    expect(() => resolveSchedule({ catchUp: "some" as never, every: "1m" })).toThrow(/catchUp/);
    expect(resolveSchedule({})).toBeUndefined();
  });

  it("derives a valid job id from the function, the due time and the schedules' secret", () => {
    const due = new Date("2024-01-01T08:30:00Z");
    const id = scheduledJobId("reports.daily", due, "secret-1");
    expect(id).toMatch(/^[A-Za-z0-9_-]{8,128}$/);
    expect(scheduledJobKey(id)).toBe("reports.daily@2024-01-01T08:30:00.000Z");
    // Stable for runtimes sharing the secret; unpredictable without it.
    expect(scheduledJobId("reports.daily", due, "secret-1")).toBe(id);
    expect(scheduledJobId("reports.daily", due, "secret-2")).not.toBe(id);
    const oldFormula = `s_${Buffer.from("reports.daily@2024-01-01T08:30:00.000Z").toString("base64url")}`;
    expect(id).not.toBe(oldFormula);
    expect(scheduledJobId("a".repeat(150), new Date(0), "secret-1")).toMatch(/^s_[0-9a-f]{64}_[A-Za-z0-9_-]{22}$/);
  });
});

describe("defineFunction's schedule and event options", () => {
  const resolve = (spec: object) =>
    resolveFunction("f", "f.ts", 1, defineFunction({ input: z.object({}), handler: async () => null, ...spec }));

  it("resolves schedule, scheduleInput and on", () => {
    const fn = resolve({ every: "1m", on: "comment.*", onFrom: "all" });
    expect(fn.schedule?.description).toBe("every 1m");
    expect(fn.listen).toEqual({ pattern: "comment.*", from: "all" });
  });

  it("refuses bad options at deploy", () => {
    expect(() => resolve({ on: "comment.>.x" })).toThrow(/option on must be/);
    expect(() => resolve({ onFrom: "all" })).toThrow(/onFrom needs on/);
    expect(() => resolve({ scheduleInput: {} })).toThrow(/needs a schedule/);
    expect(() =>
      resolveFunction(
        "g",
        "g.ts",
        1,
        defineFunction({ input: z.object({ n: z.number() }), every: "1m", handler: async () => null }),
      ),
    ).toThrow(/scheduleInput is needed/);
  });
});
