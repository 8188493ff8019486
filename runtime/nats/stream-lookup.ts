import {
  JetStreamApiCodes,
  type JetStreamManager,
  type StreamInfo,
  type StreamInfoRequestOptions,
} from "@nats-io/jetstream";

/**
 * A stream's info, or undefined when the server says it does not exist. Any other failure is
 * thrown: a request that timed out says nothing about the stream, and taken for "missing" it would
 * send an ensure step down its create path (the consumers' counterpart is consumerInfo).
 */
export async function streamInfo(
  manager: JetStreamManager,
  name: string,
  options?: Partial<StreamInfoRequestOptions>,
): Promise<StreamInfo | undefined> {
  try {
    return await manager.streams.info(name, options);
  } catch (error) {
    if ((error as { code?: unknown } | undefined)?.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw error;
  }
}
