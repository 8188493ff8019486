/**
 * How long the runtime waits for JetStream to answer one request: a publish's stored
 * acknowledgement, a key-value read or write (nats.js's default, made explicit so that what waits
 * on a chain of them, such as a client's keyed enqueue, can be derived from it).
 */
export const JETSTREAM_TIMEOUT_MS = 5_000;
