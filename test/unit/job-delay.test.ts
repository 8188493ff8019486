import { describe, expect, it } from "vitest";
import { dueTime, routeJob } from "../../runtime/invocation/job-delay";

const NOW = Date.parse("2030-01-01T00:00:00Z");

describe("due times", () => {
  it("reads a delay or a time, and runs at once without either, or when the time has passed", () => {
    expect(dueTime({}, NOW)).toBeUndefined();
    expect(dueTime({ delay: "10m" }, NOW)).toBe(NOW + 600_000);
    expect(dueTime({ delay: 0 }, NOW)).toBeUndefined();
    expect(dueTime({ runAt: new Date(NOW + 5_000) }, NOW)).toBe(NOW + 5_000);
    expect(dueTime({ runAt: "2030-01-01T00:00:05Z" }, NOW)).toBe(NOW + 5_000);
    expect(dueTime({ runAt: new Date(NOW - 1) }, NOW)).toBeUndefined();
  });

  it("refuses nonsense with E_INPUT_INVALID", () => {
    expect(() => dueTime({ delay: "soon" }, NOW)).toThrow(expect.objectContaining({ code: "E_INPUT_INVALID" }));
    expect(() => dueTime({ runAt: "not a date" }, NOW)).toThrow(expect.objectContaining({ code: "E_INPUT_INVALID" }));
    expect(() => dueTime({ delay: "1m", runAt: new Date(NOW) }, NOW)).toThrow(
      expect.objectContaining({ code: "E_INPUT_INVALID" }),
    );
  });
});

describe("routing a job", () => {
  it("sends a job due later to jetfn.delayed.<id> with its function, and others to fn.job.<name>", () => {
    const later = { "Jetfn-Id": "job-0001", "Jetfn-Not-Before": String(NOW + 1_000) };
    expect(routeJob("fn.job.send-mail", "send-mail", later, NOW)).toEqual({
      subject: "jetfn.delayed.job-0001",
      headers: { ...later, "Jetfn-Function": "send-mail" },
    });
    const due = { "Jetfn-Id": "job-0001", "Jetfn-Not-Before": String(NOW) };
    expect(routeJob("fn.job.send-mail", "send-mail", due, NOW)).toEqual({
      subject: "fn.job.send-mail",
      headers: { "Jetfn-Id": "job-0001" },
    });
    const plain = { "Jetfn-Id": "job-0001" };
    expect(routeJob("fn.job.send-mail", "send-mail", plain, NOW)).toEqual({
      subject: "fn.job.send-mail",
      headers: plain,
    });
  });
});
