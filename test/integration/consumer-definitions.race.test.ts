import { connect } from "@nats-io/transport-node";
import pino from "pino";
import { describe, expect, it } from "vitest";
import {
  type ConsumerDefinition,
  type ConsumerDefinitions,
  type ConsumerSettings,
  openConsumerDefinitions,
  supersedes,
} from "../../runtime/nats/consumer-definitions";
import { startNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// The record of each function's newest definition, settled by runtimes of different versions at the
// same moment: whatever order their reads, writes and consumer updates interleave in, the settings
// applied last are the newest definition's.

function definition(definedAt: number, seconds: number): ConsumerDefinition {
  const settings: ConsumerSettings = {
    ack_wait: seconds * 1_000_000_000,
    max_deliver: 3,
    max_ack_pending: 10_000,
    description: `written at ${definedAt}`,
  };
  return { definedAt, settings };
}

describe("supersedes", () => {
  it("a later definition replaces an earlier one, never the reverse; a tie goes to other settings", () => {
    expect(supersedes(definition(2, 10), definition(1, 30))).toBe(true);
    expect(supersedes(definition(1, 30), definition(2, 10))).toBe(false);
    expect(supersedes(definition(1, 30), definition(1, 10))).toBe(true);
    expect(supersedes(definition(1, 30), definition(1, 10), false)).toBe(false);
    expect(supersedes(definition(1, 30), definition(1, 30))).toBe(false);
  });

  it("a withdrawal wins a tie both ways, and gives way only to a later definition", () => {
    // Dated alike, the older runtime's recovery won the tie and made the withdrawn consumer anew.
    const withdrawal = (definedAt: number) => ({ definedAt, settings: null });
    expect(supersedes(definition(1, 30), withdrawal(1))).toBe(false);
    expect(supersedes(withdrawal(1), definition(1, 30))).toBe(true);
    expect(supersedes(definition(2, 30), withdrawal(1))).toBe(true);
    expect(supersedes(withdrawal(1), definition(2, 30))).toBe(false);
    expect(supersedes(withdrawal(1), withdrawal(1))).toBe(false);
  });
});

/** `count` runtimes' views of one definitions bucket, on a nats-server of the test's own. */
async function runtimesSharingDefinitions(count: number): Promise<ConsumerDefinitions[]> {
  const nats = await startNatsServer();
  stopWhenTestEnds(() => nats.stop());
  return Promise.all(
    Array.from({ length: count }, async () => {
      const nc = await connect({ servers: nats.url });
      stopWhenTestEnds(() => nc.close());
      return openConsumerDefinitions(nc, pino({ level: "silent" }));
    }),
  );
}

/** A random while of up to 30 ms, so that runtimes' writes interleave differently each round. */
function pause(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.random() * 30));
}

describe("settling definitions concurrently", () => {
  it("ends with the newest definition applied, whichever runtime applies last", async () => {
    const runtimes = await runtimesSharingDefinitions(6);
    for (let round = 0; round < 5; round++) {
      let applied: ConsumerSettings | undefined;
      const fn = `race-${round}`;
      // Runtime i holds the definition written at i; applying takes a random while, so an older
      // runtime's write can land after a newer one's.
      const outcomes = await Promise.all(
        runtimes.map((definitions, index) =>
          definitions.settle(fn, definition(index, index + 1), async (settings) => {
            await pause();
            applied = settings;
          }),
        ),
      );
      const newest = definition(runtimes.length - 1, runtimes.length).settings;
      expect(applied).toEqual(newest);
      // An older runtime that settled before the newest wrote returned its own settings then.
      expect(outcomes.at(-1)).toEqual({
        settings: newest,
        newerInForce: false,
        withdrawn: false,
        definedAt: runtimes.length - 1,
      });
    }
  });

  it("leaves no consumer once a newer definition withdrew it, whenever older runtimes apply theirs", async () => {
    // An older runtime that read its definition before the withdrawal and created the consumer
    // after the delete must learn of the withdrawal and delete it itself.
    const runtimes = await runtimesSharingDefinitions(5);
    const [withdrawing, ...older] = runtimes as [ConsumerDefinitions, ...ConsumerDefinitions[]];
    for (let round = 0; round < 5; round++) {
      const fn = `withdrawn-${round}`;
      let exists = false;
      const settling = older.map(async (definitions, index) => {
        const settled = await definitions.settle(
          fn,
          definition(index, index + 1),
          async () => {
            await pause();
            exists = true;
          },
          "events",
        );
        if (settled.withdrawn) exists = false;
      });
      await pause();
      const outcome = await withdrawing.withdraw(fn, older.length, "events");
      if (outcome === "withdrawn") exists = false;
      await Promise.all(settling);
      expect(outcome).toBe("withdrawn");
      expect(exists).toBe(false);
      // Later settles of the older definitions apply nothing.
      const late = await (older[0] as ConsumerDefinitions).settle(
        fn,
        definition(0, 1),
        async () => {
          exists = true;
        },
        "events",
      );
      expect(late).toMatchObject({ withdrawn: true, definedAt: older.length });
      expect(exists).toBe(false);
    }
  });
});
