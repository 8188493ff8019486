import { describe, expect, it } from "vitest";
import { checkDebounceMaxWait, checkDebouncePeriod, checkJobKey, claimKey } from "../../runtime/flow/job-keys";
import { keyedEnqueueRequest } from "../../runtime/flow/keyed-enqueue-request";
import { checkPriority, parseJobSubject, priorityConsumerName, prioritySubject } from "../../runtime/flow/priority";
import { routeJob } from "../../runtime/invocation/job-delay";
import { createLimiter } from "../../runtime/invocation/limiter";

describe("priorities", () => {
  it("accepts integers 0-3 (and their decimal strings, as the CLI gives them)", () => {
    expect([0, 1, 2, 3, "2"].map(checkPriority)).toEqual([0, 1, 2, 3, 2]);
  });

  it.each([4, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "4", "1.0", " 1", "0x1", "", null, {}, [1], true])(
    "refuses %j with E_INPUT_INVALID",
    (value) => {
      expect(() => checkPriority(value)).toThrow(expect.objectContaining({ code: "E_INPUT_INVALID" }));
    },
  );

  it("routes levels to subjects that no function name can take, and back", () => {
    expect(prioritySubject("send-mail", 0)).toBe("fn.job.send-mail");
    expect(prioritySubject("billing.charge", 2)).toBe("fn.job.billing.charge.P2");
    expect(priorityConsumerName("billing.charge", 2)).toBe("billing:charge:P2");
    expect(parseJobSubject("fn.job.billing.charge.P2")).toEqual({ name: "billing.charge", priority: 2 });
    expect(parseJobSubject("fn.job.billing.charge")).toEqual({ name: "billing.charge", priority: 0 });
    // A lower-case p2 is a function's name segment; P4 and P0 are not priorities, so not valid names.
    expect(parseJobSubject("fn.job.billing.p2")).toEqual({ name: "billing.p2", priority: 0 });
    expect(parseJobSubject("fn.job.billing.P4")).toBeUndefined();
    expect(parseJobSubject("fn.job.P2")).toBeUndefined();
  });

  it("publishes an outbox row's priority to the priority subject, and keeps it on a delayed job", () => {
    const now = 1_000;
    expect(routeJob("fn.job.a", "a", { "Jetfn-Id": "job-0001", "Jetfn-Priority": "3" }, now)).toEqual({
      subject: "fn.job.a.P3",
      headers: { "Jetfn-Id": "job-0001" },
    });
    const delayed = routeJob(
      "fn.job.a",
      "a",
      { "Jetfn-Id": "job-0001", "Jetfn-Priority": "1", "Jetfn-Not-Before": "5000" },
      now,
    );
    expect(delayed.subject).toBe("jetfn.delayed.job-0001");
    expect(delayed.headers["Jetfn-Priority"]).toBe("1");
  });

  it("grants a limiter's waiters of a higher priority first, in order within a priority", async () => {
    const limiter = createLimiter(1);
    const release = await limiter.acquire();
    const order: string[] = [];
    const waiters = [
      ["low-1", 0],
      ["high-1", 3],
      ["low-2", 0],
      ["mid-1", 1],
      ["high-2", 3],
    ].map(([name, priority]) =>
      limiter.acquire(undefined, priority as number).then((free) => {
        order.push(name as string);
        free();
      }),
    );
    release();
    await Promise.all(waiters);
    expect(order).toEqual(["high-1", "high-2", "mid-1", "low-1", "low-2"]);
  });
});

describe("debounce and singleton keys", () => {
  it("accepts tenant ids, emails, paths and base64", () => {
    for (const key of ["tenant:42", "a@example.com", "reports/daily", "dGVzdA==", "x".repeat(128)]) {
      expect(checkJobKey(key, "singleton")).toBe(key);
    }
  });

  it.each(["", "x".repeat(129), "has space", "line\nbreak", "fn.job.*", "a>b", "ünïcode", "tab\t", "\u0000"])(
    "refuses key %j with E_INPUT_INVALID",
    (key) => {
      expect(() => checkJobKey(key, "debounce")).toThrow(expect.objectContaining({ code: "E_INPUT_INVALID" }));
    },
  );

  it("refuses keys that are not strings", () => {
    for (const key of [undefined, 42, {}, ["a"]]) {
      expect(() => checkJobKey(key, "singleton")).toThrow(/singleton key/);
    }
  });

  it("stores a key base64url-encoded: nothing a client sends becomes a token or a wildcard", () => {
    expect(claimKey("debounce", "billing.charge", "tenant:7")).toBe("debounce.billing.charge.dGVuYW50Ojc");
    expect(claimKey("singleton", "a", "../x/*>")).toMatch(/^singleton\.a\.[A-Za-z0-9_-]+$/);
  });

  it("accepts debounce periods from 100 ms to 24 h only", () => {
    expect(checkDebouncePeriod("5s")).toBe(5_000);
    expect(checkDebouncePeriod(100)).toBe(100);
    expect(checkDebouncePeriod("24h")).toBe(86_400_000);
    for (const period of [0, 99, "25h", "-1s", "soon", undefined, Number.NaN, 1e30]) {
      expect(() => checkDebouncePeriod(period as never)).toThrow(expect.objectContaining({ code: "E_INPUT_INVALID" }));
    }
  });

  it("accepts a debounce maxWait from the period to 24 h only", () => {
    expect(checkDebounceMaxWait("1m", 5_000)).toBe(60_000);
    expect(checkDebounceMaxWait(5_000, 5_000)).toBe(5_000);
    for (const maxWait of [4_999, "25h", "-1s", "later", Number.NaN]) {
      expect(() => checkDebounceMaxWait(maxWait as never, 5_000)).toThrow(
        expect.objectContaining({ code: "E_INPUT_INVALID" }),
      );
    }
    const request = keyedEnqueueRequest("a", {}, { debounce: { key: "k", period: "1s", maxWait: "30s" } });
    expect(request.headers.get("Jetfn-Debounce-Max-Wait")).toBe("30000");
    expect(() => keyedEnqueueRequest("a", {}, { debounce: { key: "k", period: "1s", maxWait: "1ms" } })).toThrow(
      /maxWait must be between the period/,
    );
  });

  it("checks a keyed enqueue before sending it", () => {
    expect(() =>
      keyedEnqueueRequest("a", {}, { singleton: { key: "k" }, debounce: { key: "k", period: "1s" } }),
    ).toThrow(/either debounce or singleton/);
    expect(() => keyedEnqueueRequest("a", {}, { debounce: { key: "k", period: "1s" }, notBefore: 5 })).toThrow(
      /no delay/,
    );
    const request = keyedEnqueueRequest("a", { n: 1 }, { debounce: { key: "k", period: "2s" }, priority: 2 });
    expect(request.headers.get("Jetfn-Debounce-Period")).toBe("2000");
    expect(request.headers.get("Jetfn-Priority")).toBe("2");
  });
});
