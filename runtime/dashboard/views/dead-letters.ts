import type { DeadLetter } from "../../db/dead-letters";
import { html, type SafeHtml } from "../html";

// The question is read from data-confirm, never spliced into the script: an id comes from the
// database, and the browser decodes an attribute's entities before running it as script.
const CONFIRM = "return confirm(this.dataset.confirm)";

/** Dead jobs with retry and drop buttons (each asks for confirmation and needs the access token). */
export function deadLettersPage(deadLetters: DeadLetter[], message: string | undefined): SafeHtml {
  return html`${message ? html`<p class="notice">${message}</p>` : ""}
<table id="dead-letters"><thead><tr><th>id</th><th>function</th><th>attempts</th><th>last error</th><th>died</th><th></th></tr></thead><tbody>
${deadLetters.map(
  (
    dead,
  ) => html`<tr data-id="${dead.id}"><td><a href="/invocations/${dead.id}">${dead.id}</a></td><td>${dead.function}</td><td class="num">${dead.attempts}</td>
<td>${dead.error ? `${dead.error.code}: ${dead.error.message}` : ""}</td><td>${dead.diedAt ?? ""}</td>
<td><form method="post" action="/dead-letters/${encodeURIComponent(dead.id)}/retry" data-confirm="Run ${dead.id} again as a new job?" onsubmit="${CONFIRM}"><button class="retry">retry</button></form>
<form method="post" action="/dead-letters/${encodeURIComponent(dead.id)}/drop" data-confirm="Drop ${dead.id} for good?" onsubmit="${CONFIRM}"><button class="drop">drop</button></form></td></tr>`,
)}</tbody></table>
${deadLetters.length === 0 ? html`<p class="muted">no dead jobs</p>` : ""}`;
}
