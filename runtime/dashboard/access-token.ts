import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

const TOKEN_COOKIE = "jetfn_token";

/**
 * The Set-Cookie value that signs a browser in. The token is URL-encoded, so any token an operator
 * chooses (base64's "=", "+" and "/", spaces, ";") survives the cookie; `presentedTokens` decodes it.
 */
export function tokenCookie(token: string): string {
  return `${TOKEN_COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`;
}

/** The sign-in URL of a dashboard at `baseUrl`: the token as one query value, encoded. */
export function signInUrl(baseUrl: string, token: string): string {
  return `${baseUrl}/?token=${encodeURIComponent(token)}`;
}

/**
 * Every token a request presents: a bearer token, and each `jetfn_token` cookie (a browser sends
 * several when dashboards on other ports of the same host signed it in, as cookies ignore ports).
 */
export function presentedTokens(request: IncomingMessage): string[] {
  const tokens: string[] = [];
  const bearer = request.headers.authorization?.match(/^Bearer (.+)$/)?.[1];
  if (bearer) tokens.push(bearer);
  for (const part of request.headers.cookie?.split(";") ?? []) {
    // Split at the first "=" only: the value may hold more of them.
    const equals = part.indexOf("=");
    if (equals > 0 && part.slice(0, equals).trim() === TOKEN_COOKIE) tokens.push(decodeCookie(part.slice(equals + 1)));
  }
  return tokens;
}

/** Whether `given` is the token, in time that does not depend on where they differ or on their lengths. */
export function sameToken(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

function decodeCookie(value: string): string {
  const trimmed = value.trim();
  try {
    return decodeURIComponent(trimmed);
  } catch {
    // Not something this dashboard set: compare it as it is (it will not match).
    return trimmed;
  }
}
