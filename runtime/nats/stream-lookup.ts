import {
  type ConsumerInfo,
  JetStreamApiCodes,
  type JetStreamManager,
  type StreamInfo,
  type StreamInfoRequestOptions,
} from "@nats-io/jetstream";

/**
 * A stream's info, or undefined when the server says it does not exist. Any other failure is
 * thrown: a request that timed out says nothing about the stream, and taken for "missing" it would
 * send an ensure step down its create path.
 */
export async function findStream(
  manager: JetStreamManager,
  name: string,
  options?: Partial<StreamInfoRequestOptions>,
): Promise<StreamInfo | undefined> {
  try {
    return await manager.streams.info(name, options);
  } catch (error) {
    if (hasApiCode(error, JetStreamApiCodes.StreamNotFound)) return undefined;
    throw error;
  }
}

/** A consumer's info, or undefined when the server says it does not exist; any other failure is thrown. */
export async function findConsumer(
  manager: JetStreamManager,
  stream: string,
  name: string,
): Promise<ConsumerInfo | undefined> {
  try {
    return await manager.consumers.info(stream, name);
  } catch (error) {
    if (hasApiCode(error, JetStreamApiCodes.ConsumerNotFound)) return undefined;
    throw error;
  }
}

function hasApiCode(error: unknown, code: number): boolean {
  return (error as { code?: unknown } | undefined)?.code === code;
}
