/**
 * A token of SQL text, as far as the statement guard needs to tell them apart: words (keywords and
 * unquoted names, lower-cased), quoted names (as written), string constants (single-quoted and
 * dollar-quoted, with their content), statement separators and any other character.
 */
export type SqlToken =
  | { kind: "word"; text: string }
  | { kind: "quoted-name"; text: string }
  /** `escaped`: its text was written with backslash escapes, so `text` is not what the server reads. */
  | { kind: "string"; text: string; escaped?: boolean }
  | { kind: "separator" }
  | { kind: "other"; text: string };

/** Why text could not be read to its end: the guard then refuses it, being unable to tell. */
export class UnreadableSql extends Error {}

const WORD_START = /[A-Za-z_\u0080-\uffff]/;
const WORD_PART = /[A-Za-z0-9_$\u0080-\uffff]/;
const DOLLAR_TAG = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;

/** How plain '...' strings are read. */
export interface TokenizeOptions {
  /**
   * Read a backslash in a plain string as an escape, as Postgres does with
   * standard_conforming_strings off: any transaction can turn that off for itself (set_config in a
   * function, query_to_xml), so the guard reads text containing backslashes both ways.
   */
  backslashStrings?: boolean;
}

/**
 * Splits SQL text into tokens the way Postgres's lexer does for what matters here: comments
 * (nested block comments too; a line comment ends at \n or \r) are skipped, and quoting of every
 * kind (E'' with backslashes, standard strings, "names", $tag$ bodies) is honoured, so a keyword
 * inside one is not a keyword. Throws UnreadableSql for an unterminated comment or quote, and for
 * U&'' strings and U&"" names, whose escapes would hide a name from the guard.
 */
export function tokenizeSql(text: string, options: TokenizeOptions = {}): SqlToken[] {
  const tokens: SqlToken[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text.charAt(i);
    const next = text.charAt(i + 1);
    if (/\s/.test(c)) i++;
    else if (c === "-" && next === "-") i = lineEnd(text, i);
    else if (c === "/" && next === "*") i = blockCommentEnd(text, i);
    else if ((c === "u" || c === "U") && next === "&" && /['"]/.test(text.charAt(i + 2))) {
      throw new UnreadableSql("a Unicode-escaped (U&) string or name");
    } else if (c === "'") i = readString(text, i, options.backslashStrings === true, tokens);
    else if ((c === "e" || c === "E") && next === "'") i = readString(text, i + 1, true, tokens);
    else if (c === '"') i = readQuotedName(text, i, tokens);
    else if (c === "$" && DOLLAR_TAG.test(text.slice(i, i + 65))) i = readDollarString(text, i, tokens);
    else if (c === ";") {
      tokens.push({ kind: "separator" });
      i++;
    } else if (WORD_START.test(c)) i = readWord(text, i, tokens);
    else {
      tokens.push({ kind: "other", text: c });
      i++;
    }
  }
  return tokens;
}

function lineEnd(text: string, start: number): number {
  for (let i = start; i < text.length; i++) {
    const c = text.charAt(i);
    if (c === "\n" || c === "\r") return i + 1;
  }
  return text.length;
}

function blockCommentEnd(text: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < text.length) {
    if (text.startsWith("/*", i)) {
      depth++;
      i += 2;
    } else if (text.startsWith("*/", i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  throw new UnreadableSql("an unterminated /* comment");
}

function readString(text: string, quote: number, backslashes: boolean, tokens: SqlToken[]): number {
  let value = "";
  let escaped = false;
  let i = quote + 1;
  while (i < text.length) {
    const c = text.charAt(i);
    if (backslashes && c === "\\") {
      value += text.charAt(i + 1);
      escaped = true;
      i += 2;
    } else if (c === "'" && text.charAt(i + 1) === "'") {
      value += "'";
      i += 2;
    } else if (c === "'") {
      tokens.push(escaped ? { kind: "string", text: value, escaped } : { kind: "string", text: value });
      return i + 1;
    } else {
      value += c;
      i++;
    }
  }
  throw new UnreadableSql("an unterminated string constant");
}

function readQuotedName(text: string, quote: number, tokens: SqlToken[]): number {
  let value = "";
  let i = quote + 1;
  while (i < text.length) {
    const c = text.charAt(i);
    if (c === '"' && text.charAt(i + 1) === '"') {
      value += '"';
      i += 2;
    } else if (c === '"') {
      tokens.push({ kind: "quoted-name", text: value });
      return i + 1;
    } else {
      value += c;
      i++;
    }
  }
  throw new UnreadableSql("an unterminated quoted name");
}

function readDollarString(text: string, start: number, tokens: SqlToken[]): number {
  const tag = (DOLLAR_TAG.exec(text.slice(start, start + 65)) as RegExpExecArray)[0];
  const bodyStart = start + tag.length;
  const end = text.indexOf(tag, bodyStart);
  if (end === -1) throw new UnreadableSql(`an unterminated ${tag} quote`);
  tokens.push({ kind: "string", text: text.slice(bodyStart, end) });
  return end + tag.length;
}

function readWord(text: string, start: number, tokens: SqlToken[]): number {
  let i = start + 1;
  while (i < text.length && WORD_PART.test(text.charAt(i))) i++;
  tokens.push({ kind: "word", text: text.slice(start, i).toLowerCase() });
  return i;
}
