import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { runPool, waitUntil } from "../stats";
import { drainTimeoutMs, type JobContenderFactory, jobInput } from "./job-contender";

/**
 * A naive JetStream runner: its own file stream, one durable pull consumer, `consume()` and `ack()`
 * per message, nothing recorded anywhere. What jetfn would cost with none of its guarantees.
 */
export const createNaiveJetStream: JobContenderFactory = async (context, kind, tag) => {
  if (kind !== "noop") throw new Error("the naive JetStream runner only runs no-op jobs");
  const nc = await context.services.connectNats("naive-jetstream");
  const manager = await jetstreamManager(nc);
  const js = jetstream(nc);
  const stream = `NAIVE_${tag.replace(/[^A-Za-z0-9_]/g, "_")}`;
  const subject = `naive.${tag}.job`;
  await manager.streams.add({ name: stream, subjects: [subject], storage: StorageType.File });
  const encode = (index: number): string => JSON.stringify(jobInput(tag, index));
  return {
    name: "naive JetStream",
    async fill(count) {
      const started = performance.now();
      await runPool(count, context.sizes.enqueueInFlight, (index) => js.publish(subject, encode(index)));
      return performance.now() - started;
    },
    async enqueueSequentially(count) {
      const started = performance.now();
      for (let index = 0; index < count; index++) await js.publish(subject, encode(index));
      return performance.now() - started;
    },
    async drain(count) {
      await manager.consumers.add(stream, {
        durable_name: "naive",
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
      });
      const consumer = await js.consumers.get(stream, "naive");
      const messages = await consumer.consume();
      let first: number | undefined;
      let handled = 0;
      let last = 0;
      const loop = (async () => {
        for await (const message of messages) {
          first ??= performance.now();
          JSON.parse(message.string());
          message.ack();
          last = performance.now();
          if (++handled >= count) break;
        }
      })();
      await waitUntil(() => handled >= count, `${count} naive JetStream jobs`, drainTimeoutMs(count), 2);
      await loop;
      return last - (first ?? Number.NaN);
    },
    async check(count) {
      await nc.flush();
      const info = await manager.consumers.info(stream, "naive");
      const ok = info.num_ack_pending === 0 && info.num_pending === 0 && info.delivered.stream_seq >= count;
      return [
        {
          label: "all acked",
          ok,
          detail: `${info.delivered.stream_seq} delivered, ${info.num_ack_pending} unacked, ${info.num_pending} pending`,
        },
      ];
    },
    async close() {
      await manager.streams.delete(stream).catch(() => false);
      await nc.close();
    },
  };
};
