import { describe, expect, it } from "vitest";
import { checkOutboxRow, outboxRowProblem } from "../../runtime/outbox-rules";
import { OUTBOX_RULE_CASES } from "../helpers/outbox-rule-cases";

const rules = { maxPayload: 1_048_576 };

describe("the outbox rules", () => {
  it.each(OUTBOX_RULE_CASES)("$name: accepted $accepted", ({ row, accepted }) => {
    const problem = outboxRowProblem(row, rules);
    if (accepted) expect(problem).toBeUndefined();
    else expect(problem).toEqual(expect.any(String));
  });

  it("refuses a body the NATS server would not take, headers included", () => {
    const row = { id: "job-0001", subject: "fn.job.echo", headers: { "Jetfn-Id": "job-0001" }, body: "" };
    expect(outboxRowProblem({ ...row, body: "x".repeat(1_048_576 - 512) }, rules)).toBeUndefined();
    expect(outboxRowProblem({ ...row, body: "x".repeat(1_048_576 - 511) }, rules)).toMatch(/accepts at most 1048576/);
    // Bytes, not characters.
    expect(outboxRowProblem({ ...row, body: "é".repeat(600_000) }, rules)).toMatch(/1200000 bytes/);
  });

  it("refuses rows whose fields are missing or of the wrong type", () => {
    const row = { id: "job-0001", subject: "fn.job.echo", headers: null, body: "{}" } as never;
    expect(outboxRowProblem(row, rules)).toMatch(/required/);
  });

  it("throws E_OUTBOX_ROW_INVALID naming the row and the rule", () => {
    const row = { id: "evil-1", subject: "$JS.API.STREAM.PURGE.JETFN_JOBS", headers: {}, body: "" };
    expect(() => checkOutboxRow(row, rules)).toThrow(
      expect.objectContaining({
        code: "E_OUTBOX_ROW_INVALID",
        message: expect.stringContaining('"evil-1" for "$JS.API.STREAM.PURGE.JETFN_JOBS" refused'),
      }),
    );
  });
});
