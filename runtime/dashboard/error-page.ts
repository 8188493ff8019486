import { html, layout } from "./html";

/** A status and message as a dashboard page, so a browser shows the sentence with the navigation. */
export function errorPage(status: number, title: string, message: string): { status: number; body: string } {
  return { status, body: layout(title, "", html`<p class="notice error">${message}</p>`) };
}
