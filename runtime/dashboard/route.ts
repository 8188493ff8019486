import type { IncomingMessage } from "node:http";

/** What a page needs to know about who asks: signed in (token presented) or not. */
export interface Session {
  signedIn: boolean;
}

/** What a route answers: a page (HTML unless `type` says), or a redirect to `location`. */
export interface Reply {
  status?: number;
  type?: string;
  body?: string;
  location?: string;
  /** A Set-Cookie header. */
  cookie?: string;
}

/** Answers one request the route matched. */
export type Handler = (request: IncomingMessage, url: URL, session: Session) => Promise<Reply>;

/** A path pattern and method the dashboard serves, and how. */
export interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
}

/** The last path segment, decoded: a function name or an invocation id. */
export function lastSegment(url: URL, fromEnd = 1): string {
  const segment = url.pathname.split("/").at(-fromEnd) ?? "";
  try {
    return decodeURIComponent(segment);
  } catch {
    // A stray "%" is not an encoding: the segment is taken as written.
    return segment;
  }
}
