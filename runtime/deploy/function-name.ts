import path from "node:path";

const SEGMENT = /^[a-z0-9_-]+$/;
const FUNCTION_FILE = /\.(ts|mts|js|mjs)$/;
const NOT_A_FUNCTION = /\.(d|test|spec)\.(ts|mts|js|mjs)$/;

/** True for a valid function name: dot-separated segments of lower-case letters, digits, `-` and `_`. */
export function isValidFunctionName(name: string): boolean {
  return name.length > 0 && name.length <= 200 && name.split(".").every((segment) => SEGMENT.test(segment));
}

/**
 * True when a file under the functions folder is meant to be deployed. Files and folders whose
 * name starts with `_` or `.` are private helpers; declarations and tests are skipped too.
 */
export function isFunctionFile(root: string, file: string): boolean {
  const relative = path.relative(root, file);
  if (relative.startsWith("..") || !FUNCTION_FILE.test(relative) || NOT_A_FUNCTION.test(relative)) return false;
  return relative.split(path.sep).every((part) => !part.startsWith("_") && !part.startsWith("."));
}

/** `billing/charge.ts` under `root` -> `billing.charge` (not validated; see isValidFunctionName). */
export function functionNameFromPath(root: string, file: string): string {
  const relative = path.relative(root, file).replace(FUNCTION_FILE, "");
  return relative.split(path.sep).join(".");
}

/** Why a name is refused, in words a log line can carry. */
export function describeInvalidName(name: string): string {
  return `"${name}" is not a valid function name: use lower-case letters, digits, "-" and "_" in each path segment`;
}
