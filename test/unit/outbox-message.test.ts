import { describe, expect, it } from "vitest";
import { eventMessage, jobMessage } from "../../runtime/outbox/outbox-message";

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
});
