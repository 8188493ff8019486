import { describe, expect, it } from "vitest";
import type { AuditEntry } from "../../runtime/audit/audit-queries";
import { type JobRun, jetfnMatchers } from "../../runtime/testing";

function change(partial: Partial<AuditEntry>): AuditEntry {
  return {
    id: 1,
    at: "2026-01-01T00:00:00Z",
    txid: 1,
    function: "f",
    invocationId: "job-0001",
    attempt: 1,
    step: null,
    dbUser: "postgres",
    schema: "public",
    table: "sent_mail",
    operation: "INSERT",
    pk: { id: 1 },
    oldRow: null,
    newRow: null,
    changedColumns: null,
    ...partial,
  };
}

const run: JobRun = {
  kind: "job",
  id: "job-0001",
  status: "succeeded",
  result: { sent: 1 },
  errors: [],
  changes: [
    change({ newRow: { id: 1, recipient: "a@example.com", subject: "hi" } }),
    change({ id: 2, table: "items", operation: "DELETE", oldRow: { id: 9, name: "old" } }),
  ],
};

describe("jetfn matchers", () => {
  it("match what the run wrote and deleted", () => {
    expect(jetfnMatchers.toHaveWritten(run, "sent_mail", { recipient: "a@example.com" }).pass).toBe(true);
    expect(jetfnMatchers.toHaveWritten(run, "public.sent_mail").pass).toBe(true);
    expect(jetfnMatchers.toHaveDeleted(run, "items", { name: "old" }).pass).toBe(true);
    expect(jetfnMatchers.toHaveChangedRows(run, "sent_mail", 1).pass).toBe(true);
    expect(jetfnMatchers.toHaveSucceeded(run).pass).toBe(true);
  });

  it("fail with a message listing what was changed instead", () => {
    const miss = jetfnMatchers.toHaveWritten(run, "sent_mail", { recipient: "b@example.com" });
    expect(miss.pass).toBe(false);
    expect(miss.message()).toContain('expected job job-0001 to have written sent_mail {"recipient":"b@example.com"}');
    expect(miss.message()).toContain('INSERT sent_mail {"id":1,"recipient":"a@example.com","subject":"hi"}');
    expect(jetfnMatchers.toHaveWrittenNothing(run).pass).toBe(false);
    expect(jetfnMatchers.toHaveDeadLettered(run).message()).toBe(
      "expected job job-0001 to be dead, but it is succeeded",
    );
  });

  it("check a dead job's last error code", () => {
    const dead: JobRun = {
      ...run,
      status: "dead",
      changes: [],
      errors: [{ attempt: 1, code: "E_INPUT_INVALID", name: "JetfnError", message: "bad", at: "" }],
    };
    expect(jetfnMatchers.toHaveDeadLettered(dead, "E_INPUT_INVALID").pass).toBe(true);
    expect(jetfnMatchers.toHaveDeadLettered(dead, "E_HANDLER_FAILED").pass).toBe(false);
    expect(jetfnMatchers.toHaveWrittenNothing(dead).pass).toBe(true);
  });
});
