import { type KV, Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { FLOW_BUCKET, openSlotBoard, type SlotBoard, type SlotBoardOptions } from "../../runtime/flow/slot-board";
import { eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { dropWatches, startPermissionedNatsServer } from "../helpers/nats-permissions";
import { startNatsServer } from "../helpers/nats-server";

const FLOW_STREAM = `KV_${FLOW_BUCKET}`;
const MINUTE = 60_000;

/** A board on its own connection, closed when the test ends. */
async function boardOn(nc: NatsConnection, options: SlotBoardOptions = {}): Promise<SlotBoard> {
  const board = await openSlotBoard(nc, captureLogs().logger, undefined, options);
  onTestFinished(() => board.close());
  return board;
}

/** The flow bucket as another runtime sees it, on a connection of its own. */
async function bucketOn(nc: NatsConnection): Promise<KV> {
  return new Kvm(nc).open(FLOW_BUCKET);
}

function untilOf(text: string | undefined): number {
  return (JSON.parse(text ?? "{}") as { until?: number }).until ?? Number.NaN;
}

describe("slot board", () => {
  /** A board whose watch the server dropped, and the bucket on another connection. */
  async function deafBoard(): Promise<{ board: SlotBoard; bucket: KV }> {
    const server = await startPermissionedNatsServer();
    const [own, other] = [await server.connect(), await server.connect()];
    onTestFinished(async () => {
      await Promise.all([own.close(), other.close()]);
    });
    const board = await boardOn(own);
    await dropWatches(server, other, FLOW_STREAM);
    return { board, bucket: await bucketOn(other) };
  }

  it("records the slots a refused take found taken, when its watch had not heard of them", async () => {
    const { board, bucket } = await deafBoard();
    // Another runtime took both slots.
    await bucket.put("c.k_full.f.0", JSON.stringify({ until: Date.now() + MINUTE }));
    await bucket.put("c.k_full.f.1", JSON.stringify({ until: Date.now() + MINUTE }));
    expect(await board.take("c.k_full.f", 2, Date.now() + MINUTE)).toBeUndefined();
    // Known at once: a job parked for them is not woken again straight away to find them taken.
    expect(board.occupied("c.k_full.f", 2)).toBe(2);
    expect(board.nextFree("c.k_full.f", 2)).toBeGreaterThan(Date.now());
  });

  it("takes a slot it never heard of once the slot's time has passed", async () => {
    const { board, bucket } = await deafBoard();
    // Left by a runtime that died holding it.
    await bucket.put("c.k_over.f.0", JSON.stringify({ until: Date.now() - 1_000 }));
    const until = Date.now() + MINUTE;
    const slot = await board.take("c.k_over.f", 1, until);
    expect(slot?.key).toBe("c.k_over.f.0");
    expect(untilOf((await bucket.get("c.k_over.f.0"))?.string())).toBe(until);
  });

  it("forgets keys whose slots have all been free a while, and takes them again", async () => {
    const server = await startNatsServer();
    const nc = await connect({ servers: server.url });
    onTestFinished(() => nc.close());
    const board = await boardOn(nc, { idleMs: 300 });
    // Keys come from job input (tenant ids): each used once, as by many tenants.
    for (let from = 0; from < 500; from += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, index) => {
          const slot = await board.take(`c.k_tenant${from + index}.f`, 2, Date.now() + MINUTE);
          await slot?.release();
        }),
      );
    }
    expect(board.groups).toBeGreaterThan(0);
    await eventually(() => board.groups === 0, 10_000);
    // A forgotten key's slot is still in the bucket, free: taken again by one more read and write.
    const slot = await board.take("c.k_tenant7.f", 2, Date.now() + MINUTE);
    expect(slot).toBeDefined();
    expect(board.occupied("c.k_tenant7.f", 2)).toBe(1);
  });

  it.each(["renewal", "release"])(
    "frees a slot whose release meets a renewal in flight (%s sent first), and reports no lost lease",
    async (first) => {
      const server = await startNatsServer();
      const nc = await connect({ servers: server.url });
      onTestFinished(() => nc.close());
      const board = await boardOn(nc);
      const bucket = await bucketOn(nc);
      const slot = await board.take("c.k_race.f", 1, Date.now() + MINUTE);
      if (!slot) throw new Error("no slot to race on");
      // Both sent before either is answered: a renewal timer firing as the job ends.
      let renewed: Promise<boolean>;
      let released: Promise<void>;
      if (first === "renewal") {
        renewed = slot.extend(Date.now() + MINUTE);
        released = slot.release();
      } else {
        released = slot.release();
        renewed = slot.extend(Date.now() + MINUTE);
      }
      const [kept] = await Promise.all([renewed, released]);
      expect(kept).toBe(true);
      expect(untilOf((await bucket.get("c.k_race.f.0"))?.string())).toBe(0);
      expect(board.occupied("c.k_race.f", 1)).toBe(0);
    },
  );

  it("keeps a slot for one job: it takes the slot even before its watch heard of the keeping, and nobody else does", async () => {
    const { board, bucket } = await deafBoard();
    // Another runtime freed its lease and kept it for job "woken-a", which it sent back.
    await bucket.put("c.k_kept.f.0", JSON.stringify({ until: Date.now() + MINUTE, for: "woken-a" }));
    const until = Date.now() + MINUTE;
    const slot = await board.take("c.k_kept.f", 1, until, { claimant: "woken-a", kept: "c.k_kept.f.0" });
    expect(slot?.key).toBe("c.k_kept.f.0");
    expect(JSON.parse((await bucket.get("c.k_kept.f.0"))?.string() ?? "{}")).toEqual({ until });

    await bucket.put("c.k_kept2.f.0", JSON.stringify({ until: Date.now() + MINUTE, for: "woken-b" }));
    expect(await board.take("c.k_kept2.f", 1, until)).toBeUndefined();
    expect(await board.take("c.k_kept2.f", 1, until, { claimant: "woken-c", kept: "c.k_kept2.f.0" })).toBeUndefined();
    // The refused take recorded whom the slot is kept for: its job finds it without the hint.
    expect(board.keptFor("c.k_kept2.f", "woken-b")).toBe(true);
    expect((await board.take("c.k_kept2.f", 1, until, { claimant: "woken-b" }))?.key).toBe("c.k_kept2.f.0");
  });

  it("hands a held slot over: kept for the named job, occupied for everyone else until then", async () => {
    const server = await startNatsServer();
    const nc = await connect({ servers: server.url });
    onTestFinished(() => nc.close());
    const board = await boardOn(nc);
    const bucket = await bucketOn(nc);
    const slot = await board.take("c.k_hand.f", 1, Date.now() + MINUTE);
    if (!slot) throw new Error("no slot to hand over");
    expect(await slot.keepFor("next-job", Date.now() + MINUTE)).toBe(true);
    expect((JSON.parse((await bucket.get("c.k_hand.f.0"))?.string() ?? "{}") as { for?: string }).for).toBe("next-job");
    expect(board.keptFor("c.k_hand.f", "next-job")).toBe(true);
    expect(await board.take("c.k_hand.f", 1, Date.now() + MINUTE)).toBeUndefined();
    // Kept for a job that never came: once its time has passed, anyone may take it.
    expect(await slot.keepFor("gone-job", Date.now() - 1)).toBe(true);
    expect((await board.take("c.k_hand.f", 1, Date.now() + MINUTE))?.key).toBe("c.k_hand.f.0");
  });
});
