import { type ConsumerInfo, JetStreamApiCodes, type JetStreamManager } from "@nats-io/jetstream";

/** Consumers the server puts on one page of a listing (nats-server's JSApiListLimit). */
export const CONSUMERS_PER_PAGE = 256;

/** The consumers of one stream, read once for many look-ups. */
export interface ConsumerLookup {
  /** A consumer's info; undefined when it does not exist. Any failure to read it is thrown. */
  info(name: string): Promise<ConsumerInfo | undefined>;
}

/**
 * Reads the consumers of `stream` for `wanted` look-ups with as few requests as it takes. `total` is
 * how many consumers the stream has (`state.consumer_count` of its info), when known: while the
 * look-ups are no more than the pages a listing of them all takes, each consumer is asked for on
 * its own; otherwise the stream's consumers are listed once, page by page (500 functions, two
 * pages). A consumer the listing leaves out is asked for on its own before it counts as absent: on
 * a cluster the server leaves out consumers whose leader did not answer in time (in a `missing`
 * field nats.js drops), and a consumer deleted between two pages shifts the next page past another.
 */
export async function lookUpConsumers(
  manager: JetStreamManager,
  stream: string,
  wanted: number,
  total?: number,
): Promise<ConsumerLookup> {
  const pages = total === undefined ? 0 : Math.max(1, Math.ceil(total / CONSUMERS_PER_PAGE));
  if (wanted <= pages) return { info: (name) => consumerInfo(manager, stream, name) };
  const listed = new Map<string, ConsumerInfo>();
  try {
    for await (const info of manager.consumers.list(stream)) listed.set(info.name, info);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    return { info: async () => undefined }; // No stream, no consumers.
  }
  return { info: async (name) => listed.get(name) ?? (await consumerInfo(manager, stream, name)) };
}

/** A consumer's info; undefined when it or its stream does not exist (any other failure is thrown). */
export async function consumerInfo(
  manager: JetStreamManager,
  stream: string,
  name: string,
): Promise<ConsumerInfo | undefined> {
  try {
    return await manager.consumers.info(stream, name);
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/** True when JetStream answered that the consumer, or its stream, does not exist. */
export function isNotFound(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === JetStreamApiCodes.ConsumerNotFound || code === JetStreamApiCodes.StreamNotFound;
}
