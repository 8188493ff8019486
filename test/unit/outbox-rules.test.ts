import { describe, expect, it } from "vitest";
import { outboxRowProblem } from "../../runtime/outbox/outbox-rules";
import { OUTBOX_RULE_CASES } from "../helpers/outbox-rule-cases";

const rules = { maxPayload: 1_048_576 };

describe("the outbox rules", () => {
  it.each(OUTBOX_RULE_CASES)("$name: accepted $accepted", ({ row, accepted }) => {
    const problem = outboxRowProblem(row, rules);
    if (accepted) expect(problem).toBeUndefined();
    else expect(problem).toEqual(expect.any(String));
  });

  it("refuses a body the NATS server would not take, headers included", () => {
    const row = { id: "echo:job-0001", subject: "fn.job.echo", headers: { "Jetfn-Id": "job-0001" }, body: "" };
    expect(outboxRowProblem({ ...row, body: "x".repeat(1_048_576 - 512) }, rules)).toBeUndefined();
    expect(outboxRowProblem({ ...row, body: "x".repeat(1_048_576 - 511) }, rules)).toMatch(/accepts at most 1048576/);
    // Bytes, not characters.
    expect(outboxRowProblem({ ...row, body: "é".repeat(600_000) }, rules)).toMatch(/1200000 bytes/);
  });

  it("refuses rows whose fields are missing or of the wrong type", () => {
    const row = { id: "echo:job-0001", subject: "fn.job.echo", headers: null, body: "{}" } as never;
    expect(outboxRowProblem(row, rules)).toMatch(/required/);
  });
});
