import { html, type SafeHtml } from "../html";

/**
 * A small script that reloads each element marked `data-fragment` from that URL, every
 * `data-every` milliseconds (or `intervalMs`). A failed fetch leaves the element as it was.
 */
export function refreshScript(intervalMs = 2_000): SafeHtml {
  return html`<script>
for (const element of document.querySelectorAll("[data-fragment]")) {
  setInterval(async () => {
    try {
      const response = await fetch(element.dataset.fragment, { headers: { accept: "text/html" } });
      if (response.ok) element.innerHTML = await response.text();
    } catch {
      // The runtime restarting or the network gone: the next tick tries again.
    }
  }, Number(element.dataset.every) || ${intervalMs});
}
</script>`;
}
