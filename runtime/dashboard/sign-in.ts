import type { IncomingMessage } from "node:http";
import { sameToken, tokenCookie } from "./access-token";
import { html, layout, type SafeHtml } from "./html";
import type { Reply } from "./route";

/** The page with the token form; reachable without the token (it is how a browser gets one). */
export const SIGN_IN_PATH = "/sign-in";

/** The link to the sign-in page that returns to `next` afterwards. */
export function signInLink(next: string, text = "sign in"): SafeHtml {
  return html`<a class="sign-in" href="${SIGN_IN_PATH}?next=${encodeURIComponent(next)}">${text}</a>`;
}

/** Shown instead of action buttons to a browser that has not signed in. */
export function signInHint(next: string, what: string): SafeHtml {
  return html`<p class="signin">${signInLink(next)} with the dashboard's access token to ${what}.</p>`;
}

/**
 * The answer to a request without the token: a page saying so, with the way to sign in. A refused
 * action returns to the page it was sent from (its path without the action's last part).
 */
export function signInNeeded(url: URL, write: boolean): { status: number; body: string } {
  const next = write ? actionPage(url.pathname) : localNext(url);
  return {
    status: 401,
    body: layout(
      "sign in needed",
      "",
      html`<p class="notice">This needs the dashboard's access token. ${signInLink(next, "Sign in")} with the token the runtime logged (JETFN_DASHBOARD_TOKEN, or the sign-in URL in its log), then try again.</p>`,
    ),
  };
}

/** The sign-in page: a token form that comes back here, then goes on to `next`. */
export function signInPage(next: string, mismatch: boolean): SafeHtml {
  return html`${mismatch ? html`<p class="notice error">That token does not match this dashboard's.</p>` : ""}
<p>Paste the access token (JETFN_DASHBOARD_TOKEN, or the <code>token</code> of the sign-in URL the runtime logged). It is kept as a cookie of this browser.</p>
<form class="filters" method="post" action="${SIGN_IN_PATH}"><input type="hidden" name="next" value="${next}">
<input type="password" name="token" placeholder="access token" autocomplete="current-password" required><button>sign in</button></form>`;
}

/** A `next` that stays on this dashboard: a path, never "//host" or a URL of another site. */
export function safeNext(value: string | null | undefined): string {
  if (!value) return "/";
  const resolved = new URL(value, "http://dashboard");
  if (resolved.origin !== "http://dashboard" || resolved.pathname.startsWith("//")) return "/";
  return `${resolved.pathname}${resolved.search}`;
}

/** The page an action's form is on: the dead-letter list, or the invocation being cancelled. */
function actionPage(path: string): string {
  if (path.startsWith("/dead-letters/")) return "/dead-letters";
  return safeNext(path.replace(/\/[^/]*$/, "") || "/");
}

function localNext(url: URL): string {
  return safeNext(`${url.pathname}${url.search}`);
}

/** Longest sign-in form body read: a token and a path. */
const MAX_FORM_BYTES = 8_192;

/**
 * The sign-in form's POST. The token travels in the body, so it never sits in a URL the browser
 * keeps in its history. The right token sets the cookie and goes on to `next`; a wrong one gets the
 * form again, saying so.
 */
export async function signInWithForm(request: IncomingMessage, token: string): Promise<Reply> {
  const form = new URLSearchParams(await readBody(request));
  const next = safeNext(form.get("next"));
  const given = form.get("token");
  if (given === null || !sameToken(given, token)) {
    return { status: 401, body: layout("sign in", "", signInPage(next, true)) };
  }
  return { status: 303, location: next, cookie: tokenCookie(token) };
}

async function readBody(request: IncomingMessage): Promise<string> {
  let body = "";
  for await (const chunk of request) {
    body += String(chunk);
    if (body.length > MAX_FORM_BYTES) return "";
  }
  return body;
}
