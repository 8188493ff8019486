import { SourceMap } from "node:module";
import path from "node:path";

/**
 * Stack frames of function files point at their compiled bundle (the loader compiles them with
 * esbuild and runs them through `vm`, which Node's own source-map support does not cover), so a
 * throw on line 18 of `flaky.ts` would read `flaky.ts:41`. Each loaded file's inline source map is
 * kept here, unparsed, and applied only when an error's stack is normalised: jobs that succeed pay
 * nothing.
 */
interface RegisteredMap {
  /** The base64 JSON of the inline map; parsed on the first error that needs it. */
  encoded: string;
  /** Where esbuild wrote the bundle; the map's sources are relative to it. */
  outputDir: string;
  parsed?: SourceMap | null;
}

const INLINE_MAP_PREFIX = "//# sourceMappingURL=data:application/json;base64,";
const registered = new Map<string, RegisteredMap>();

/** Remembers the inline source map of a function file's compiled code (the newest deploy wins). */
export function registerFunctionSourceMap(file: string, code: string, outputDir: string): void {
  const start = code.lastIndexOf(INLINE_MAP_PREFIX);
  if (start === -1) {
    registered.delete(file);
    return;
  }
  const encoded = code.slice(start + INLINE_MAP_PREFIX.length).trim();
  registered.set(file, { encoded, outputDir });
}

/** `    at fn (/abs/file.ts:41:9)` or `    at /abs/file.ts:41:9`. */
const FRAME = /^(\s+at (?:.*\()?)(.+?):(\d+):(\d+)(\)?)$/;

/** Rewrites the frames of a stack that lie in function files to their source lines. */
export function mapFunctionStack(stack: string): string {
  if (registered.size === 0) return stack;
  return stack
    .split("\n")
    .map((line) => mapFrame(line))
    .join("\n");
}

function mapFrame(line: string): string {
  const match = FRAME.exec(line);
  if (!match) return line;
  const [, before, file, lineText, columnText, after] = match as unknown as string[];
  const entry = registered.get(file as string);
  const map = entry && parsedMap(entry);
  if (!entry || !map) return line;
  const found = map.findEntry(Number(lineText) - 1, Number(columnText) - 1) as {
    originalSource?: string;
    originalLine?: number;
    originalColumn?: number;
  };
  if (found.originalSource === undefined || found.originalLine === undefined) return line;
  const source = path.resolve(entry.outputDir, found.originalSource);
  return `${before}${source}:${found.originalLine + 1}:${(found.originalColumn ?? 0) + 1}${after}`;
}

function parsedMap(entry: RegisteredMap): SourceMap | null {
  if (entry.parsed === undefined) {
    try {
      entry.parsed = new SourceMap(JSON.parse(Buffer.from(entry.encoded, "base64").toString("utf8")));
    } catch {
      entry.parsed = null;
    }
  }
  return entry.parsed;
}
