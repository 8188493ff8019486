import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { eventually } from "../helpers/environment";
import { enqueueAcknowledged, jobOutcome, report, scale, useFaultCluster } from "./support/fault-cluster";

// A poison message (every attempt throws) against two `jetfn start` processes: exactly the configured
// attempts (fault-poison: 3, backoff 400ms then 800ms), spaced by the backoff, then dead.
const JOBS = scale(20, 3);

const cluster = useFaultCluster();

describe("a poison message", () => {
  it("is tried exactly the configured number of times, spaced by the backoff, then dead", async () => {
    const { ids } = await enqueueAcknowledged(cluster().js, "fault-poison", JOBS, (n) => ({ tag: `p${n}` }));
    const gaps: number[][] = [];
    for (const id of ids) {
      const outcome = await eventually(async () => {
        const found = await jobOutcome(cluster().env, id);
        return found?.status === "dead" ? found : undefined;
      }, 30_000);
      expect(outcome).toMatchObject({ status: "dead", code: "E_HANDLER_FAILED", attempts: 3 });
      expect(outcome.errors.map((error) => error.code)).toEqual([
        "E_HANDLER_FAILED",
        "E_HANDLER_FAILED",
        "E_HANDLER_FAILED",
      ]);
      const times = outcome.errors.map((error) => Date.parse(error.at));
      gaps.push([(times[1] as number) - (times[0] as number), (times[2] as number) - (times[1] as number)]);
    }
    const manager = await jetstreamManager(cluster().nc);
    // No fourth delivery: the consumer has nothing pending or unacknowledged.
    const info = await eventually(async () => {
      const found = await manager.consumers.info("JETFN_JOBS", "fault-poison");
      return found.num_ack_pending === 0 && found.num_pending === 0 ? found : undefined;
    });
    report("poison", { jobs: JOBS, attemptsEach: 3, gapsMs: gaps, delivered: info.delivered.consumer_seq });
    expect(info.delivered.consumer_seq).toBe(JOBS * 3);
    for (const [first, second] of gaps) {
      expect(first).toBeGreaterThanOrEqual(400);
      expect(first).toBeLessThan(400 + 3_000);
      expect(second).toBeGreaterThanOrEqual(800);
      expect(second).toBeLessThan(800 + 3_000);
    }
  }, 90_000);
});
