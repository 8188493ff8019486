/** Connection string of a Postgres role allowed to create databases (tests make their own). */
export function adminUrl(): string {
  return process.env.JETFN_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

/** The admin URL pointed at another database on the same server. */
export function databaseUrl(name: string): string {
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

/** The same connection string, connecting as another role (the test server trusts local roles). */
export function urlAs(url: string, role: string): string {
  const parsed = new URL(url);
  parsed.username = role;
  parsed.password = "";
  return parsed.toString();
}
