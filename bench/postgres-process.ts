/**
 * Whether a Postgres process's CPU belongs to a contender's drain, from its process title
 * (`/proc/<pid>/cmdline`): the server's own processes (postmaster, checkpointer, WAL writer, ...)
 * always, client backends only when connected to the contender's database. The machine's Postgres
 * is shared with whatever else runs (tests of other work, other benchmarks' databases); their
 * backends' CPU is not the contender's.
 */
export function isPostgresProcessOf(title: string, database: string | undefined): boolean {
  // Titles read "postgres: [cluster: ]<what>"; the postmaster keeps its command line instead.
  const match = /^postgres: (?:\S+: )?(.*)$/.exec(title.trim());
  if (!match) return true;
  const what = match[1] ?? "";
  // An autovacuum worker serves one database, named after it: another database's is not ours.
  if (what.startsWith(AUTOVACUUM_WORKER)) return database === undefined || what.split(" ")[2] === database;
  if (SERVER_PROCESSES.some((name) => what.startsWith(name))) return true;
  // A client backend: "<user> <database> <host>(<port>) <activity>".
  return database === undefined || what.split(" ")[1] === database;
}

const AUTOVACUUM_WORKER = "autovacuum worker";

/** Titles of the server's own processes (their work, such as WAL writing, serves every database). */
const SERVER_PROCESSES = [
  "checkpointer",
  "background writer",
  "walwriter",
  "autovacuum launcher",
  "logical replication",
  "archiver",
  "stats collector",
  "walsender",
  "walreceiver",
  "startup",
];
