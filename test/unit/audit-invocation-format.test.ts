import { describe, expect, it } from "vitest";
import type { AuditEntry, InvocationStep } from "../../runtime/audit/audit-queries";
import { describeInvocationChanges } from "../../runtime/inspect/audit-format";

// `jetfn audit <invocation-id>`: a job's changes by durable step, in step order, then by table.

let nextId = 1;
function entry(step: string | null, table: string, row: Record<string, unknown>, txid = 81234): AuditEntry {
  return {
    id: nextId++,
    at: "2026-12-08T09:00:01.000Z",
    txid,
    function: "orders.fulfil",
    invocationId: "job-1",
    attempt: 1,
    step,
    dbUser: "jetfn_runtime",
    schema: "public",
    table,
    operation: "INSERT",
    pk: { id: row.id },
    oldRow: null,
    newRow: row,
    changedColumns: null,
  };
}

const steps: InvocationStep[] = [
  { key: "reserve", seq: 1, attempt: 1, finishedAt: "2026-12-08T09:00:01.250Z", txid: "81234" },
  { key: "nap", seq: 2, attempt: 1, finishedAt: "2026-12-08T09:00:02.000Z", txid: null },
  { key: 'charge "card"', seq: 3, attempt: 2, finishedAt: "2026-12-08T09:00:33.000Z", txid: "81301" },
];

describe("describeInvocationChanges", () => {
  it("heads each step's changes, in the steps' order, then the job's own, each by table", () => {
    const text = describeInvocationChanges(
      [
        entry('charge "card"', "payments", { id: 7 }, 81301),
        entry(null, "orders", { id: 1 }),
        entry("reserve", "stock", { id: 3 }),
        entry("reserve", "holds", { id: 4 }),
        entry("reserve", "stock", { id: 5 }),
      ],
      steps,
    );
    expect(text.split("\n")).toEqual([
      'step "reserve" (attempt 1, at 2026-12-08 09:00:01, txid 81234)',
      "  public.stock: 2 change(s)",
      '    2026-12-08 09:00:01  orders.fulfil job-1 step "reserve"  INSERT stock #3',
      '    2026-12-08 09:00:01  orders.fulfil job-1 step "reserve"  INSERT stock #5',
      "  public.holds: 1 change(s)",
      '    2026-12-08 09:00:01  orders.fulfil job-1 step "reserve"  INSERT holds #4',
      'step "charge \\"card\\"" (attempt 2, at 2026-12-08 09:00:33, txid 81301)',
      "  public.payments: 1 change(s)",
      '    2026-12-08 09:00:01  orders.fulfil job-1 step "charge \\"card\\""  INSERT payments #7',
      "outside steps (the job's own transaction)",
      "  public.orders: 1 change(s)",
      "    2026-12-08 09:00:01  orders.fulfil job-1  INSERT orders #1",
      "",
    ]);
  });

  it("lists a job without steps by table alone, and a step it does not know without details", () => {
    expect(describeInvocationChanges([entry(null, "orders", { id: 1 })], [])).toBe(
      "public.orders: 1 change(s)\n  2026-12-08 09:00:01  orders.fulfil job-1  INSERT orders #1\n",
    );
    expect(describeInvocationChanges([entry("gone", "orders", { id: 2 })], steps).split("\n")[0]).toBe('step "gone"');
  });

  it("marks a row stamped with a step but written in another transaction, and escapes what a terminal would act on", () => {
    const text = describeInvocationChanges(
      [
        entry("reserve", "stock", { id: 3 }),
        entry("reserve", "stock", { id: 9 }, 99999),
        entry("a\u202eb", "x", { id: 1 }),
        entry("c\u{e0041}d", "x", { id: 2 }),
      ],
      steps,
    );
    expect(text).toContain("INSERT stock #3\n");
    expect(text).toContain("INSERT stock #9  [txid 99999, not the step's]\n");
    expect(text).toContain('step "a\\u202eb"\n');
    expect(text).not.toContain("\u202e");
    expect(text).toContain('step "c\\udb40\\udc41d"\n');
  });
});
