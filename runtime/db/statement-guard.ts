import { JetfnError } from "../support/errors";
import { type SqlToken, type TokenizeOptions, tokenizeSql, UnreadableSql } from "./sql-tokens";

/**
 * The statement guard. A handler's SQL runs inside its invocation's transaction, often a savepoint
 * of a transaction shared with other jobs (group commit), on a pooled session that later serves
 * other invocations and the runtime itself. A statement that ends or escapes that transaction
 * (COMMIT, ROLLBACK, a savepoint of the runtime's) would commit or drop other jobs' writes; one
 * that changes the session (SET without LOCAL, RESET, DISCARD, SET ROLE, a session advisory lock,
 * LISTEN, a prepared statement, a cursor WITH HOLD, a temporary table) would reach invocations that
 * come later; one that sets the audit stamp (`jetfn.*` settings) would make the audit log lie.
 * Such a statement is refused before it is sent, with E_STATEMENT_REFUSED, and its attempt fails.
 *
 * The guard reads text the way Postgres's lexer does (comments, quotes, dollar quotes, several
 * statements in one string); what it cannot read to the end, or code it cannot see into (a DO
 * block), it refuses. Code already in the database (a function that calls set_config) is beyond
 * it: the checks made at COMMIT and the session reset after it cover that (see
 * invocation-checks.ts and session-reset.ts).
 */
export function statementRefusal(text: string): string | undefined {
  let tokens: SqlToken[];
  try {
    tokens = tokenizeSql(text);
  } catch (error) {
    if (error instanceof UnreadableSql) return `the statement cannot be read to its end (${error.message})`;
    throw error;
  }
  const reason = tokensRefusal(tokens);
  if (reason || !text.includes("\\")) return reason;
  // A transaction may have turned standard_conforming_strings off for itself through code the
  // guard cannot see: then \' ends no plain string. Text that would not even parse that way is
  // not run at all (Postgres parses the whole message before running any of it).
  const other = readableAs(text, { backslashStrings: true });
  const otherReason = other && tokensRefusal(other);
  return otherReason ? `${otherReason} (as read with standard_conforming_strings off)` : undefined;
}

function readableAs(text: string, options: TokenizeOptions): SqlToken[] | undefined {
  try {
    return tokenizeSql(text, options);
  } catch (error) {
    if (error instanceof UnreadableSql) return undefined;
    throw error;
  }
}

function tokensRefusal(tokens: SqlToken[]): string | undefined {
  for (const statement of splitStatements(tokens)) {
    const reason = refusalOf(statement);
    if (reason) return reason;
  }
  return undefined;
}

/**
 * Texts already allowed, with whether each may create a temporary object. drizzle sends the same
 * parameterised texts again and again; reading one costs a few microseconds, looking it up almost
 * nothing. Bounded, as SQL built with inlined values has no end of texts (a text past the bound is
 * read every time).
 */
const allowedTexts = new Map<string, boolean>();
const MAX_REMEMBERED = 1_000;

/**
 * Throws E_STATEMENT_REFUSED when the guard refuses `text`; otherwise says whether the statement
 * may create a temporary object (see mayCreateTemporaryObject), remembered with the text.
 */
export function assertStatementAllowed(text: string): boolean {
  const remembered = allowedTexts.get(text);
  if (remembered !== undefined) return remembered;
  const reason = statementRefusal(text);
  if (reason) {
    throw new JetfnError(
      "E_STATEMENT_REFUSED",
      `statement refused: ${reason}. A handler's SQL runs inside the invocation's transaction, which the runtime commits or rolls back; its session serves other invocations after it`,
    );
  }
  const createsTemporary = mayCreateTemporaryObject(text);
  if (allowedTexts.size < MAX_REMEMBERED) allowedTexts.set(text, createsTemporary);
  return createsTemporary;
}

/**
 * Whether a statement the guard allowed may create a temporary object (a table ON COMMIT DROP):
 * cheap and generous, as a wrong yes only ends a shared transaction early.
 */
function mayCreateTemporaryObject(text: string): boolean {
  // TEMP, TEMPORARY; any CREATE or SELECT ... INTO (search_path may start with pg_temp, so they
  // may create there without saying so). Not pg_temp alone: naming it in search_path creates nothing.
  return /\btemp(orary)?\b|\bcreate\b|\bselect\b[\s\S]*\binto\b/i.test(text);
}

/**
 * Savepoint names a handler's own nested transactions use (drizzle's `transaction()` inside ctx.db,
 * relayed from a worker thread as text): they nest inside the invocation's own savepoint.
 */
const HANDLER_SAVEPOINT = /^jetfn_savepoint_\d+$/;

/** Statements that end, open or split transactions, or change or reach beyond the session. */
const REFUSED_FIRST_WORDS: Record<string, string> = {
  begin: "BEGIN opens a transaction",
  start: "START TRANSACTION opens a transaction",
  commit: "COMMIT ends the transaction",
  end: "END ends the transaction",
  abort: "ABORT ends the transaction",
  prepare: "PREPARE keeps a statement (or a prepared transaction) beyond the invocation",
  deallocate: "DEALLOCATE drops prepared statements the runtime relies on",
  discard: "DISCARD changes the session",
  reset: "RESET changes the session",
  listen: "LISTEN changes the session",
  unlisten: "UNLISTEN changes the session",
  load: "LOAD changes the session",
  do: "a DO block is code the guard cannot read (put it in a function created by a migration)",
};

/**
 * Built-in functions that run SQL given to them as text, which the guard cannot read: any of them
 * could set the audit stamp, or standard_conforming_strings, for the rest of the transaction.
 */
const SQL_TEXT_FUNCTIONS = new Set([
  "query_to_xml",
  "query_to_xmlschema",
  "query_to_xml_and_xmlschema",
  "ts_stat",
  "ts_rewrite",
]);

/** What ALTER ... SET gives session defaults to. */
const SESSION_DEFAULT_OBJECTS = new Set(["role", "user", "database", "system"]);

/**
 * The session's temporary schema: an object made there is a temporary one, whatever the statement
 * says, and a table there shadows an app table of the same name for later members of a shared
 * transaction (Postgres searches it first).
 */
const TEMP_SCHEMA = /^pg_temp(_\d+)?$/;

/** Functions that take or drop session-level advisory locks, which outlive the transaction. */
const SESSION_LOCK_FUNCTIONS = new Set([
  "pg_advisory_lock",
  "pg_advisory_lock_shared",
  "pg_try_advisory_lock",
  "pg_try_advisory_lock_shared",
  "pg_advisory_unlock",
  "pg_advisory_unlock_shared",
  "pg_advisory_unlock_all",
]);

/**
 * jetfn's own schema: the invocation records, the outbox, the audit log and the functions that write
 * them. The runtime role may write there, so a handler's statement naming it could mark another job
 * succeeded (fencing out its real run) or dead, or write its own records. Handlers read the audit
 * log through the SDK outside their invocations, never through ctx.db.
 */
const JETFN_SCHEMA = "jetfn";
const JETFN_SCHEMA_REFUSAL =
  "jetfn's schema holds the runtime's records, outbox and audit log, which a handler may not touch";

/** A search_path value (a SET LOCAL or set_config string) that names jetfn's schema. */
function namesJetfnSchema(value: string): boolean {
  return value
    .toLowerCase()
    .split(/[\s,]+/)
    .some((part) => part.replace(/^"|"$/g, "") === JETFN_SCHEMA);
}

/** Settings whose change would make the guard read text differently from the server, or lie in the audit. */
function isProtectedSetting(name: string): boolean {
  const lower = name.toLowerCase();
  return lower.startsWith("jetfn.") || lower === "standard_conforming_strings" || lower === "backslash_quote";
}

function splitStatements(tokens: SqlToken[]): SqlToken[][] {
  const statements: SqlToken[][] = [[]];
  for (const token of tokens) {
    if (token.kind === "separator") statements.push([]);
    else (statements[statements.length - 1] as SqlToken[]).push(token);
  }
  return statements.filter((statement) => statement.length > 0);
}

function wordAt(statement: SqlToken[], index: number): string | undefined {
  const token = statement[index];
  return token?.kind === "word" ? token.text : undefined;
}

function refusalOf(statement: SqlToken[]): string | undefined {
  const first = wordAt(statement, 0);
  if (first === undefined) {
    // `(select ...)` or similar: fine unless it calls what is refused anywhere.
    return refusedCall(statement);
  }
  const fixed = REFUSED_FIRST_WORDS[first];
  if (fixed) return fixed;
  switch (first) {
    case "savepoint":
      return handlerSavepoint(statement, 1) ? undefined : "a SAVEPOINT not of the handler's own nested transactions";
    case "release":
      return handlerSavepoint(statement, wordAt(statement, 1) === "savepoint" ? 2 : 1)
        ? undefined
        : "RELEASE of a savepoint not of the handler's own nested transactions";
    case "rollback":
      return rollbackToHandlerSavepoint(statement) ? undefined : "ROLLBACK ends the transaction";
    case "set":
      // pg_temp may be named in search_path (last, against shadowing); what is created there is
      // sealed off from later members of a shared transaction (see mayCreateTemporaryObject).
      return setRefusal(statement) ?? refusedCall(statement, false);
    case "declare":
      return hasWords(statement, "with", "hold")
        ? "a cursor WITH HOLD outlives the transaction"
        : refusedCall(statement);
    case "create":
      return createRefusal(statement) ?? refusedCall(statement);
    case "alter":
      // ALTER ROLE CURRENT_USER SET ... is allowed to any role for itself: it outlives every
      // session, and the session reset restores it.
      return SESSION_DEFAULT_OBJECTS.has(wordAt(statement, 1) ?? "")
        ? "ALTER ROLE, USER, DATABASE or SYSTEM changes the settings of later sessions"
        : refusedCall(statement);
    default:
      return refusedCall(statement);
  }
}

function handlerSavepoint(statement: SqlToken[], nameIndex: number): boolean {
  const name = statement[nameIndex];
  return (
    statement.length === nameIndex + 1 &&
    (name?.kind === "word" || name?.kind === "quoted-name") &&
    HANDLER_SAVEPOINT.test(name.text)
  );
}

function rollbackToHandlerSavepoint(statement: SqlToken[]): boolean {
  // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
  let index = 1;
  if (wordAt(statement, index) === "work" || wordAt(statement, index) === "transaction") index++;
  if (wordAt(statement, index) !== "to") return false;
  index++;
  if (wordAt(statement, index) === "savepoint") index++;
  return handlerSavepoint(statement, index);
}

/**
 * SET LOCAL (and SET TRANSACTION) last until the transaction ends, SET CONSTRAINTS until the end of
 * the job's part (the runtime fires its deferred constraints there and gives the next job the
 * declared modes, see constraint-modes.ts); anything else changes the session. SET LOCAL ROLE stays allowed (row-level security per tenant): the audit
 * records the role that wrote, and the session is reset after the transaction anyway.
 */
function setRefusal(statement: SqlToken[]): string | undefined {
  const second = wordAt(statement, 1);
  if (second === "transaction" || second === "constraints") return undefined;
  if (second !== "local") return "SET without LOCAL changes the session (use SET LOCAL)";
  const name = settingName(statement, 2);
  if (name === undefined) return "a SET LOCAL the guard cannot read";
  if (isProtectedSetting(name)) return `SET of ${name}, which jetfn sets`;
  if (
    name.toLowerCase() === "search_path" &&
    statement.some((token) => token.kind === "string" && namesJetfnSchema(token.text))
  ) {
    return JETFN_SCHEMA_REFUSAL;
  }
  return undefined;
}

/** The (possibly dotted) setting name starting at `index`. */
function settingName(statement: SqlToken[], index: number): string | undefined {
  const parts: string[] = [];
  let i = index;
  for (;;) {
    const token = statement[i];
    if (token?.kind !== "word" && token?.kind !== "quoted-name") return undefined;
    parts.push(token.text);
    const dot = statement[i + 1];
    if (dot?.kind !== "other" || dot.text !== ".") return parts.join(".");
    i += 2;
  }
}

/** CREATE [OR REPLACE] [GLOBAL | LOCAL] TEMP[ORARY] TABLE | VIEW | SEQUENCE ..., unless ON COMMIT DROP. */
function createRefusal(statement: SqlToken[]): string | undefined {
  for (let i = 1; i < Math.min(statement.length, 6); i++) {
    const word = wordAt(statement, i);
    if (word === "temp" || word === "temporary") {
      if (hasWords(statement, "on", "commit") && hasWords(statement, "commit", "drop")) return undefined;
      return "a temporary object outlives the transaction (add ON COMMIT DROP)";
    }
    if (word !== "or" && word !== "replace" && word !== "global" && word !== "local") return undefined;
  }
  return undefined;
}

function hasWords(statement: SqlToken[], first: string, second: string): boolean {
  return statement.some(
    (token, i) => token.kind === "word" && token.text === first && wordAt(statement, i + 1) === second,
  );
}

/**
 * Calls anywhere in the statement: session advisory locks, and set_config unless it is plainly
 * transaction-local (third argument the literal `true`) and of a setting jetfn does not own.
 * `select ... into temp` counts too.
 */
function refusedCall(statement: SqlToken[], refuseTempSchema = true): string | undefined {
  for (let i = 0; i < statement.length; i++) {
    const token = statement[i] as SqlToken;
    if (token.kind !== "word" && token.kind !== "quoted-name") continue;
    if (token.text === JETFN_SCHEMA) return JETFN_SCHEMA_REFUSAL;
    if (refuseTempSchema && TEMP_SCHEMA.test(token.text.toLowerCase()))
      return "pg_temp holds temporary objects, which outlive the invocation";
    if (SQL_TEXT_FUNCTIONS.has(token.text)) return `${token.text} runs SQL text the guard cannot read`;
    if (SESSION_LOCK_FUNCTIONS.has(token.text)) return `${token.text} takes a session lock (use the _xact_ variants)`;
    if (token.text === "set_config") {
      const reason = setConfigRefusal(statement, i + 1);
      if (reason) return reason;
    }
    if (token.text === "into" && (wordAt(statement, i + 1) === "temp" || wordAt(statement, i + 1) === "temporary")) {
      return "a temporary table outlives the transaction";
    }
  }
  return undefined;
}

function setConfigRefusal(statement: SqlToken[], open: number): string | undefined {
  const paren = statement[open];
  if (paren?.kind !== "other" || paren.text !== "(") return undefined; // a column or alias named set_config
  const args = callArguments(statement, open);
  const [name, , local] = args ?? [];
  if (args?.length !== 3 || name?.length !== 1 || name[0]?.kind !== "string" || name[0].escaped) {
    return "a set_config the guard cannot read (give the setting's name as a constant and true as is_local)";
  }
  if (isProtectedSetting(name[0].text)) return `set_config of ${name[0].text}, which jetfn sets`;
  if (name[0].text.toLowerCase() === "search_path") {
    const value = args?.[1];
    if (value?.length !== 1 || value[0]?.kind !== "string" || value[0].escaped) {
      return "a set_config of search_path the guard cannot read (give the value as a constant)";
    }
    if (namesJetfnSchema(value[0].text)) return JETFN_SCHEMA_REFUSAL;
  }
  if (local?.length !== 1 || local[0]?.kind !== "word" || local[0].text !== "true") {
    return "set_config without is_local true changes the session";
  }
  return undefined;
}

/** The arguments of the call whose "(" is at `open`, split at top-level commas. */
function callArguments(statement: SqlToken[], open: number): SqlToken[][] | undefined {
  const args: SqlToken[][] = [[]];
  let depth = 0;
  for (let i = open + 1; i < statement.length; i++) {
    const token = statement[i] as SqlToken;
    if (token.kind === "other" && token.text === "(") depth++;
    if (token.kind === "other" && token.text === ")") {
      if (depth === 0) return args;
      depth--;
    }
    if (depth === 0 && token.kind === "other" && token.text === ",") args.push([]);
    else (args[args.length - 1] as SqlToken[]).push(token);
  }
  return undefined;
}
