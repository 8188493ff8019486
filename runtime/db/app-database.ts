import { createTableRelationsHelpers, extractTablesRelationalConfig } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { drizzle, PostgresJsDatabase, PostgresJsSession } from "drizzle-orm/postgres-js";
import type { Sql } from "postgres";
import type { InvocationDatabase } from "../sdk/define-function";

/** The exports of the app's drizzle schema module: its tables and their `relations(...)`. */
export type AppSchema = Record<string, unknown>;

/** Makes one invocation's `ctx.db` over its transaction's client. */
export type DatabaseBinder = (client: Sql) => InvocationDatabase;

/** `ctx.db` without an app schema: every query builder, no `ctx.db.query`. */
export const bindPlainDatabase: DatabaseBinder = (client) => drizzle(client) as unknown as InvocationDatabase;

/**
 * The runtime's binder: `ctx.db` over an invocation's client, and with `schema` it also answers
 * relational queries (`ctx.db.query.posts.findMany({ with: { comments: true } })`). drizzle() would
 * make a dialect per invocation and, with a schema, work out the tables' relations again (about
 * 160 µs for the example app, more than a no-op job costs); both are made once here, and each
 * invocation only gets its session and database objects.
 */
export function createDatabaseBinder(schema: AppSchema | undefined): DatabaseBinder {
  const relational = schema ? relationalConfig(schema) : undefined;
  const dialect = new PgDialect();
  // Not through drizzle(): its only other work is setting the pool's type parsers, which
  // connectDatabase's drizzle() already did on the same options object (a worker thread's relayed
  // client only forwards queries, whose answers the runtime's pool parsed).
  return (client) => {
    const session = new PostgresJsSession(client, dialect, relational, {});
    const db = new PostgresJsDatabase<AppSchema>(dialect, session, relational);
    // As drizzle() does: the runtime reaches a thread's queries' transaction through it.
    return Object.assign(db, { $client: client }) as unknown as InvocationDatabase;
  };
}

function relationalConfig(schema: AppSchema) {
  const { tables, tableNamesMap } = extractTablesRelationalConfig(schema, createTableRelationsHelpers);
  return { fullSchema: schema, schema: tables, tableNamesMap };
}
