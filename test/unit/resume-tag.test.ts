import { describe, expect, it } from "vitest";
import { wokenHeader } from "../../runtime/flow/wake-tag";
import {
  readResume,
  reopenToken,
  resumeHeader,
  resumeMessageId,
  resumeRowId,
  retryToken,
  sleepToken,
  sleepTokenCount,
} from "../../runtime/invocation/resume-tag";

const SECRET = "a-secret-only-runtimes-hold";

describe("resume tags", () => {
  it("verify for the function, invocation and token they were made for, and no other", () => {
    const header = resumeHeader(SECRET, "orders.ship", "job-0001", "2s1");
    expect(readResume(SECRET, "orders.ship", "job-0001", header)).toBe("2s1");
    expect(readResume(SECRET, "orders.bill", "job-0001", header)).toBeUndefined();
    expect(readResume(SECRET, "orders.ship", "job-0002", header)).toBeUndefined();
    expect(readResume(SECRET, "orders.ship", "job-0001", header.replace("2s1", "2s2"))).toBeUndefined();
    expect(readResume("another-secret", "orders.ship", "job-0001", header)).toBeUndefined();
  });

  it("are not woken jobs' tags, nor anything but <token>.<22 characters>", () => {
    const woken = wokenHeader(SECRET, "orders.ship", "job-0001", { attemptsBefore: 2, enqueuedAt: 1 });
    expect(readResume(SECRET, "orders.ship", "job-0001", woken)).toBeUndefined();
    const header = resumeHeader(SECRET, "orders.ship", "job-0001", "2s1");
    expect(readResume(SECRET, "orders.ship", "job-0001", `${header}\r\nNats-Rollup: all`)).toBeUndefined();
    expect(() => resumeHeader(SECRET, "orders.ship", "job-0001", "2 s1")).toThrow(TypeError);
  });

  it("give each resumption a message id of its own that does not give its tag away", () => {
    const first = resumeHeader(SECRET, "orders.ship", "job-0001", "2s1");
    const again = resumeHeader(SECRET, "orders.ship", "job-0001", "2s2");
    const id = resumeMessageId("orders.ship", "job-0001", first);
    expect(id).toMatch(/^orders\.ship:job-0001:2s1:[A-Za-z0-9_-]{22}$/);
    expect(id).not.toContain(first.slice(first.indexOf(".") + 1));
    expect(resumeMessageId("orders.ship", "job-0001", again)).not.toBe(id);
    expect(resumeMessageId("orders.ship", "job-0001", first)).toBe(id);
    // The outbox row's id, which apps may read, gives away neither the tag nor the message id.
    const row = resumeRowId("orders.ship", "job-0001", first);
    expect(row).toMatch(/^orders\.ship:job-0001:2s1:[A-Za-z0-9_-]{22}$/);
    expect(row).not.toBe(id);
    expect(row).not.toContain(first.slice(first.indexOf(".") + 1));
  });

  it("count the times a sleep was set", () => {
    expect(sleepToken(7, 3)).toBe("7s3");
    expect(sleepTokenCount("7s3")).toBe(3);
    expect(sleepTokenCount(undefined)).toBe(0);
    expect(sleepTokenCount("7t")).toBe(0);
  });

  it("name a step's retry by its attempt, and each reopening of a dead job anew", () => {
    expect(retryToken(4, 2)).toBe("4r2");
    expect(resumeHeader(SECRET, "fn", "id-000001", retryToken(4, 2))).toMatch(/^4r2\./);
    expect(reopenToken(5, null)).toBe("5o1");
    expect(reopenToken(5, "5r3")).toBe("5o1");
    expect(reopenToken(5, "5o1")).toBe("5o2");
    // Reopened once at step 5, it went on to step 6: its next reopening starts from 6.
    expect(reopenToken(6, "5o2")).toBe("6o1");
    expect(reopenToken(15, "5o2")).toBe("15o1");
  });
});
