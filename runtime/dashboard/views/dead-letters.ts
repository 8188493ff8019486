import type { DeadLetter } from "../../db/dead-letters";
import { html, type SafeHtml } from "../html";
import { signInHint } from "../sign-in";
import { timeCell } from "../time-format";
import { CONFIRM } from "./confirm";

/** What the dead-letter page shows besides the list. */
export interface DeadLettersContext {
  /** An action's outcome. */
  message?: string;
  /** The function the list is filtered by: "retry all" retries its dead jobs. */
  function?: string;
  /** Signed in with the token: the actions show; otherwise a sign-in hint does. */
  signedIn: boolean;
}

/** Dead jobs with retry and drop buttons (each asks for confirmation and needs the access token). */
export function deadLettersPage(deadLetters: DeadLetter[], context: DeadLettersContext): SafeHtml {
  const next = context.function ? `/dead-letters?function=${encodeURIComponent(context.function)}` : "/dead-letters";
  return html`${context.message ? html`<p class="notice">${context.message}</p>` : ""}
<form class="filters" method="get"><input name="function" placeholder="function" value="${context.function ?? ""}"><button>filter</button></form>
${context.signedIn ? retryAllAction(context.function, deadLetters.length) : signInHint(next, "retry or drop dead jobs")}
<table id="dead-letters"><thead><tr><th>id</th><th>function</th><th>attempts</th><th>last error</th><th>died</th><th></th></tr></thead><tbody>
${deadLetters.map(
  (
    dead,
  ) => html`<tr data-id="${dead.id}"><td><a href="/invocations/${dead.id}">${dead.id}</a></td><td>${dead.function}</td><td class="num">${dead.attempts}</td>
<td>${dead.error ? `${dead.error.code}: ${dead.error.message}` : ""}</td><td>${timeCell(dead.diedAt)}</td>
<td>${context.signedIn ? actions(dead) : ""}</td></tr>`,
)}</tbody></table>
${deadLetters.length === 0 ? html`<p class="muted">no dead jobs</p>` : ""}`;
}

/** "retry all" for a function's dead jobs: shown once the list is filtered by one function. */
function retryAllAction(fn: string | undefined, count: number): SafeHtml {
  if (!fn || count === 0) return html``;
  return html`<form method="post" action="/dead-letters/retry-all?function=${encodeURIComponent(fn)}" data-confirm="Run every dead job of ${fn} again as new jobs?" onsubmit="${CONFIRM}"><button class="retry-all">retry all dead jobs of ${fn}</button></form>`;
}

function actions(dead: DeadLetter): SafeHtml {
  return html`<form method="post" action="/dead-letters/${encodeURIComponent(dead.id)}/retry" data-confirm="Run ${dead.id} again as a new job?" onsubmit="${CONFIRM}"><button class="retry">retry</button></form>
<form method="post" action="/dead-letters/${encodeURIComponent(dead.id)}/drop" data-confirm="Drop ${dead.id} for good?" onsubmit="${CONFIRM}"><button class="drop">drop</button></form>`;
}
