import type { DeadLetter } from "../../db/dead-letters";
import { html, type SafeHtml } from "../html";

/** Dead jobs with retry and drop buttons (each asks for confirmation and needs the access token). */
export function deadLettersPage(deadLetters: DeadLetter[], message: string | undefined): SafeHtml {
  return html`${message ? html`<p class="notice">${message}</p>` : ""}
<table id="dead-letters"><thead><tr><th>id</th><th>function</th><th>attempts</th><th>last error</th><th>died</th><th></th></tr></thead><tbody>
${deadLetters.map(
  (
    dead,
  ) => html`<tr data-id="${dead.id}"><td><a href="/invocations/${dead.id}">${dead.id}</a></td><td>${dead.function}</td><td class="num">${dead.attempts}</td>
<td>${dead.error ? `${dead.error.code}: ${dead.error.message}` : ""}</td><td>${dead.diedAt ?? ""}</td>
<td><form method="post" action="/dead-letters/${dead.id}/retry" onsubmit="return confirm('Run ${dead.id} again as a new job?')"><button class="retry">retry</button></form>
<form method="post" action="/dead-letters/${dead.id}/drop" onsubmit="return confirm('Drop ${dead.id} for good?')"><button class="drop">drop</button></form></td></tr>`,
)}</tbody></table>
${deadLetters.length === 0 ? html`<p class="muted">no dead jobs</p>` : ""}`;
}
