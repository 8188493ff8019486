import { describe, expect, it } from "vitest";
import { keepJobAlive } from "../../runtime/invocation/database-outage";

describe("keeping a held job's lease", () => {
  it("pings while the job could still be waiting for a slot, running and recording", () => {
    const healthy = { waiting: 0 };
    expect(keepJobAlive(2_000, healthy, 0)).toBe(true);
    expect(keepJobAlive(2_000, healthy, 63_999)).toBe(true);
  });

  it("lets a stuck attempt lose its lease, so JetStream delivers the job again", () => {
    expect(keepJobAlive(2_000, { waiting: 0 }, 64_000)).toBe(false);
  });

  it("keeps every held job while the database is away, so an outage uses up no attempts", () => {
    expect(keepJobAlive(2_000, { waiting: 3 }, 10 * 60_000)).toBe(true);
  });
});
