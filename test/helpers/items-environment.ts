import { afterAll, beforeAll } from "vitest";
import type { InvocationStatusView } from "../../runtime/nats/status-api";
import type { JetfnClient } from "../../runtime/sdk/client";
import { FINAL_STATUSES } from "../../schema/jetfn";
import { createTestEnvironment, eventually, type TestEnvironment } from "./environment";

/** A test file's environment with the fixtures' `items` table, a client, and two waits on them. */
export interface ItemsEnvironment {
  env: TestEnvironment;
  client: JetfnClient;
  /** Waits until job `id` has ended (any final status); returns its status. */
  ended(id: string, timeoutMs?: number): Promise<InvocationStatusView>;
  /** The names in `items` that start with `prefix`, in the order they were written. */
  namesLike(prefix: string): Promise<string[]>;
}

/** Starts an environment (see createTestEnvironment) whose database has the `items` table the fixtures write. */
export async function createItemsEnvironment(): Promise<ItemsEnvironment> {
  const env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  const client = await env.client();
  return {
    env,
    client,
    ended: (id, timeoutMs = 20_000) =>
      eventually(async () => {
        const view = await client.status(id);
        return FINAL_STATUSES.has(view.status) ? view : undefined;
      }, timeoutMs),
    async namesLike(prefix) {
      const rows = await env.database.sql<{ name: string }[]>`
        select name from items where name like ${`${prefix}%`} order by id`;
      return rows.map((row) => row.name);
    },
  };
}

/**
 * For a test file: an items environment made before the file's tests and closed after them. Returns
 * a getter, valid once the tests run.
 */
export function useItemsEnvironment(): () => ItemsEnvironment {
  let made: ItemsEnvironment | undefined;
  beforeAll(async () => {
    made = await createItemsEnvironment();
  });
  afterAll(async () => {
    await made?.env.close();
  });
  return () => {
    if (!made) throw new Error("the items environment is made in beforeAll; call the getter inside a test");
    return made;
  };
}
