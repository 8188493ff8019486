import type { Sql, TransactionSql } from "postgres";
import { type OutboxRules, outboxRowProblem } from "../outbox/outbox-rules";
import { JetfnError } from "../support/errors";

/** An outbox row the relay set aside instead of publishing, as `jetfn outbox` lists it. */
export interface SetAsideEntry {
  id: string;
  subject: string;
  headers: Record<string, unknown>;
  /** The body's first 200 characters; `bodyBytes` is its whole size. */
  bodyPreview: string;
  bodyBytes: number;
  /** The function and invocation that wrote it; null for apps' rows. */
  function: string | null;
  invocationId: string | null;
  reason: string;
  createdAt: string;
  setAsideAt: string;
}

/** Which set-aside rows a command acts on: those with one id, or all of them. */
export type SetAsideTarget = { id: string } | { all: true };

/** What `releaseSetAside` did: rows back in the outbox, and rows that stay aside with why. */
export interface ReleaseResult {
  released: string[];
  refused: { id: string; reason: string }[];
}

const PREVIEW_CHARS = 200;

/** Set-aside rows, newest first. */
export async function listSetAside(sql: Sql, limit = 100): Promise<SetAsideEntry[]> {
  const rows = await sql`
    select id, subject, headers, left(body, ${PREVIEW_CHARS}) as body_preview, octet_length(body) as body_bytes,
           function, invocation_id, reason,
           to_jsonb(created_at) #>> '{}' as created_at, to_jsonb(set_aside_at) #>> '{}' as set_aside_at
    from jetfn.outbox_set_aside order by set_aside_at desc, position desc limit ${limit}`;
  return rows.map((row) => ({
    id: row.id as string,
    subject: row.subject as string,
    headers: row.headers as Record<string, unknown>,
    bodyPreview: row.body_preview as string,
    bodyBytes: Number(row.body_bytes),
    function: (row.function as string | null) ?? null,
    invocationId: (row.invocation_id as string | null) ?? null,
    reason: row.reason as string,
    createdAt: row.created_at as string,
    setAsideAt: row.set_aside_at as string,
  }));
}

/**
 * Moves set-aside rows back into the outbox, to be published, after checking the outbox rules
 * again (the database's constraint checks them too). A row that still breaks them, or whose id is
 * already waiting in the outbox, stays aside. E_NOT_FOUND when `{ id }` matches nothing.
 */
export async function releaseSetAside(sql: Sql, target: SetAsideTarget, rules: OutboxRules): Promise<ReleaseResult> {
  return sql.begin(async (tx) => {
    const rows = await lockTargets(tx, target);
    const result: ReleaseResult = { released: [], refused: [] };
    for (const row of rows) {
      const reason = outboxRowProblem(row, rules) ?? (await moveBack(tx, row.position));
      if (reason) result.refused.push({ id: row.id, reason });
      else result.released.push(row.id);
    }
    return result;
  });
}

/** Deletes set-aside rows for good; returns their ids. E_NOT_FOUND when `{ id }` matches nothing. */
export async function dropSetAside(sql: Sql, target: SetAsideTarget): Promise<string[]> {
  const rows =
    "id" in target
      ? await sql`delete from jetfn.outbox_set_aside where id = ${target.id} returning id`
      : await sql`delete from jetfn.outbox_set_aside returning id`;
  if ("id" in target && rows.length === 0) throw notSetAside(target.id);
  return rows.map((row) => row.id as string);
}

interface LockedRow {
  position: number;
  id: string;
  subject: string;
  headers: Record<string, string>;
  body: string;
}

async function lockTargets(tx: TransactionSql, target: SetAsideTarget): Promise<LockedRow[]> {
  const rows =
    "id" in target
      ? await tx`select position, id, subject, headers, body from jetfn.outbox_set_aside
                 where id = ${target.id} order by position for update`
      : await tx`select position, id, subject, headers, body from jetfn.outbox_set_aside order by position for update`;
  if ("id" in target && rows.length === 0) throw notSetAside(target.id);
  return rows.map((row) => ({
    position: Number(row.position),
    id: row.id as string,
    subject: row.subject as string,
    headers: row.headers as Record<string, string>,
    body: row.body as string,
  }));
}

/** Moves one row back at the end of the outbox; returns why not when the database refuses it. */
async function moveBack(tx: TransactionSql, position: number): Promise<string | undefined> {
  try {
    return await tx.savepoint(async (savepoint) => {
      const moved = await savepoint`
        with row as (delete from jetfn.outbox_set_aside where position = ${position} returning *)
        insert into jetfn.outbox (id, subject, headers, body, function, invocation_id)
        select id, subject, headers, body, function, invocation_id from row
        on conflict (id) do nothing returning id`;
      if (moved.length > 0) return undefined;
      // Nothing inserted: undo the delete and say why.
      throw new JetfnError("E_OUTBOX_ROW_INVALID", "a row with this id is already waiting in the outbox");
    });
  } catch (error) {
    return (error as Error).message;
  }
}

function notSetAside(id: string): JetfnError {
  return new JetfnError("E_NOT_FOUND", `no outbox row ${JSON.stringify(id)} is set aside (see \`jetfn outbox\`)`);
}
