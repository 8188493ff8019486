import { connect, type NatsConnection } from "@nats-io/transport-node";

/** Counts the JetStream API requests a server gets, seen from a connection of its own. */
export interface ApiRequestCounter {
  /**
   * The requests of each kind that `action` made through `client` (and any other connection), and
   * what it returned. Flushed before and after: the observer has every request the server got
   * before its answer to the last round trip.
   */
  counted<T>(client: NatsConnection, action: () => Promise<T>): Promise<{ made: Record<string, number>; result: T }>;
  close(): Promise<void>;
}

/**
 * Subscribes to `subjects` (every JetStream API request by default) on the server at `url`; a
 * request's kind is `kindOf` its subject (by default its two tokens after `$JS.API`:
 * `STREAM.INFO`, `CONSUMER.LIST` ...).
 */
export async function countApiRequests(
  url: string,
  subjects = "$JS.API.>",
  kindOf: (subject: string) => string = (subject) => subject.split(".").slice(2, 4).join("."),
): Promise<ApiRequestCounter> {
  const requests = new Map<string, number>();
  const observer = await connect({ servers: url });
  observer.subscribe(subjects, {
    callback: (_error, message) => {
      const kind = kindOf(message.subject);
      requests.set(kind, (requests.get(kind) ?? 0) + 1);
    },
  });
  await observer.flush();
  return {
    async counted(client, action) {
      await client.flush();
      await observer.flush();
      requests.clear();
      const result = await action();
      await client.flush();
      await observer.flush();
      return { made: Object.fromEntries(requests), result };
    },
    close: () => observer.close(),
  };
}
