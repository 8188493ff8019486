import { JetfnError } from "../support/errors";

/** Thrown to every job of a group whose COMMIT failed: each runs again, in a transaction of its own. */
export class SharedCommitError extends JetfnError {
  readonly sharedCommitFailed = true;

  constructor(members: number, cause: unknown) {
    super(
      "E_DATABASE_UNAVAILABLE",
      `the transaction this job shared with ${Math.max(0, members - 1)} other(s) did not commit: ${(cause as Error)?.message ?? cause}`,
      { cause },
    );
  }
}

/** True when an error, or any error in its chain of causes, says a shared COMMIT failed. */
export function isSharedCommitFailure(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    if ((current as { sharedCommitFailed?: unknown }).sharedCommitFailed === true) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
