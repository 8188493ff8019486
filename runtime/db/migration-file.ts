import { createHash } from "node:crypto";

/** One migration: its name in the ledger (`jetfn.migrations`), its SQL, and the checksum of its file. */
export interface MigrationFile {
  name: string;
  sql: string;
  checksum: string;
}

/** A migration from a file's text; drizzle-kit's statement markers are dropped (semicolons suffice). */
export function migrationFile(name: string, text: string): MigrationFile {
  return {
    name,
    sql: text.replaceAll("--> statement-breakpoint", ""),
    checksum: createHash("sha256").update(text).digest("hex"),
  };
}
