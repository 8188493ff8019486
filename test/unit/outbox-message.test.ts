import { describe, expect, it } from "vitest";
import { eventMessage, jobMessage, keyedJobOf } from "../../runtime/outbox/outbox-message";

describe("outbox messages", () => {
  it("carry the input as its JSON text, whatever characters it holds", () => {
    const input = { text: "é ✓ 🎉", lone: "\ud800", nested: [1, { a: null }] };
    expect(jobMessage("send-mail", input, "job-id-0001").body).toBe(JSON.stringify(input));
    expect(eventMessage("user.created", input, "event-1").body).toBe(JSON.stringify(input));
    expect(jobMessage("send-mail", undefined, "job-id-0002").body).toBe("");
  });

  it("measure the input in bytes against the server's max_payload, headers' room kept", () => {
    // 600 two-byte characters and the quotes: 1202 bytes, over 1536 - 512.
    expect(() => jobMessage("send-mail", "é".repeat(600), "job-id-0003", 1_536)).toThrow(
      expect.objectContaining({ code: "E_PAYLOAD_TOO_LARGE", message: expect.stringContaining("is 1202 bytes") }),
    );
    expect(jobMessage("send-mail", "é".repeat(511), "job-id-0004", 1_536).body).toHaveLength(513);
  });

  it("carry a singleton or debounce key as the enqueue API's headers, checked, and read back for the relay", () => {
    const debounced = jobMessage("send-mail", { n: 1 }, "job-id-0005", undefined, undefined, {
      priority: 2,
      debounce: { key: "user:7", period: "5s", maxWait: "1m" },
    });
    expect(debounced.headers).toEqual({
      "Jetfn-Id": "job-id-0005",
      "Jetfn-Priority": "2",
      "Jetfn-Debounce-Key": "user:7",
      "Jetfn-Debounce-Period": "5000",
      "Jetfn-Debounce-Max-Wait": "60000",
    });
    expect(keyedJobOf(debounced)).toMatchObject({
      fn: "send-mail",
      id: "job-id-0005",
      priority: 2,
      notBefore: undefined,
      debounce: { key: "user:7", periodMs: 5_000, maxWaitMs: 60_000 },
    });
    const singleton = jobMessage("send-mail", {}, "job-id-0006", undefined, 1_893_456_000_000, {
      singleton: { key: "s" },
    });
    expect(keyedJobOf(singleton)).toMatchObject({ singleton: "s", notBefore: 1_893_456_000_000 });
    expect(keyedJobOf(jobMessage("send-mail", {}, "job-id-0007"))).toBeUndefined();
    for (const flow of [
      { singleton: { key: "a b" } },
      { debounce: { key: "k", period: "10ms" } },
      { singleton: { key: "k" }, debounce: { key: "k", period: "1s" } },
    ]) {
      expect(() => jobMessage("send-mail", {}, "job-id-0008", undefined, undefined, flow)).toThrow(
        expect.objectContaining({ code: "E_INPUT_INVALID" }),
      );
    }
    // A debounced job runs one period after its enqueue: no delay as well.
    expect(() =>
      jobMessage("send-mail", {}, "job-id-0009", undefined, 1_893_456_000_000, {
        debounce: { key: "k", period: "1s" },
      }),
    ).toThrow(/no delay or runAt/);
  });
});
