import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isReservedInvocationId, jobMessageId } from "../../runtime/nats/subjects";
import { jobMessage } from "../../runtime/outbox/outbox-message";

describe("invocation ids", () => {
  it("reserves the shape of the ids the runtime derives, and nothing the SDK generates", () => {
    expect(isReservedInvocationId("3f2a9c1e-77b0-8a41-9c3d-0123456789ab")).toBe(true);
    for (let i = 0; i < 100; i++) expect(isReservedInvocationId(randomUUID())).toBe(false);
    expect(isReservedInvocationId("order-12345")).toBe(false);
    expect(() => jobMessage("echo", {}, "3f2a9c1e-77b0-8a41-9c3d-0123456789ab")).toThrow(
      expect.objectContaining({ code: "E_INPUT_INVALID" }),
    );
  });

  it("gives a job's message id its function, so one id of two functions is two messages", () => {
    expect(jobMessageId("ledger-add", "order-12345")).not.toBe(jobMessageId("bigresult", "order-12345"));
    const message = jobMessage("billing.charge", { n: 1 }, "order-12345");
    expect(message).toMatchObject({ id: "billing.charge:order-12345", headers: { "Jetfn-Id": "order-12345" } });
  });
});
