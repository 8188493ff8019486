import { expect, it } from "vitest";
import { deadLettersPage } from "../../runtime/dashboard/views/dead-letters";

// Stored script injection: an invocation id reaches the dead-letter page from the database, where
// anything holding the runtime's role (a handler's SQL included) can write one. HTML escaping
// protects HTML, but the browser decodes an attribute before running it as script, so an id must
// never be spliced into an inline handler: there, "&#39;" is a quote again.
const HOSTILE_ID = "x');fetch('/dead-letters/victim/drop',{method:'POST'});('";

const ENTITIES: Record<string, string> = { "&#39;": "'", "&quot;": '"', "&lt;": "<", "&gt;": ">", "&amp;": "&" };

/** The script of every inline event handler, as the browser runs it (entities decoded). */
function inlineScripts(markup: string): string[] {
  return [...markup.matchAll(/\son[a-z]+="([^"]*)"/g)].map((match) =>
    (match[1] as string).replace(/&#39;|&quot;|&lt;|&gt;|&amp;/g, (entity) => ENTITIES[entity] as string),
  );
}

it("puts no invocation id into the script of the retry and drop confirmations", () => {
  const page = deadLettersPage(
    [{ id: HOSTILE_ID, function: "boom", attempts: 1, error: null, diedAt: null, enqueuedAt: null, retryOf: null }],
    { signedIn: true, function: HOSTILE_ID },
  ).value;
  const scripts = inlineScripts(page);
  expect(scripts.length).toBeGreaterThan(0);
  for (const script of scripts) expect(script).not.toContain("fetch(");
  // The question still names the job, as escaped text.
  expect(page).toContain("Run x&#39;);fetch(");
});
