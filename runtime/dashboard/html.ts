/** Markup that is already safe to send; interpolating it into `html` does not escape it again. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => ESCAPES[character] as string);
}

type Interpolation = SafeHtml | string | number | boolean | null | undefined | Interpolation[];

function render(value: Interpolation): string {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(String(value));
}

/**
 * Builds HTML, escaping every interpolated value unless it is SafeHtml (a nested `html`).
 * @example html`<td>${row.name}</td>`
 */
export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  let out = strings[0] as string;
  values.forEach((value, index) => {
    out += render(value) + (strings[index + 1] as string);
  });
  return new SafeHtml(out);
}

/** The page frame: navigation, styles, and an optional script that refreshes parts of the page. */
export function layout(title: string, active: string, body: SafeHtml): string {
  const tab = (href: string, label: string) =>
    html`<a href="${href}" class="${active === label ? "active" : ""}">${label}</a>`;
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title} · jetfn</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${new SafeHtml(STYLE)}</style></head>
<body><header><strong>jetfn</strong>
<nav>${tab("/", "functions")}${tab("/invocations", "invocations")}${tab("/audit", "audit")}${tab("/dead-letters", "dead letters")}</nav></header>
<main><h1>${title}</h1>${body}</main></body></html>`.value;
}

const STYLE = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:2rem;align-items:center;padding:.6rem 1.5rem;background:#1d2330;color:#fff}
nav a{color:#c8d0e0;margin-right:1rem;text-decoration:none}nav a.active{color:#fff;border-bottom:2px solid #6ea8fe}
main{padding:1rem 1.5rem}h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#fff;border:1px solid #e3e6ec;padding:.6rem;overflow:auto;max-height:20rem}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;margin-bottom:1rem}input,select,button{font:inherit;padding:.25rem .4rem}
.status-succeeded{color:#1a7f37}.status-dead,.status-failed{color:#c62828}.status-running{color:#0b61d8}
.bar{height:.6rem;background:#e3e6ec;border-radius:.3rem;overflow:hidden;width:16rem}.bar>span{display:block;height:100%;background:#6ea8fe}
.diff-old{color:#c62828}.diff-new{color:#1a7f37}.muted{color:#6b7385}.ok{color:#1a7f37}.broken{color:#c62828;font-weight:600}
time{white-space:nowrap}.notice{padding:.4rem .6rem;background:#fff8e1;border:1px solid #f0d58c}.signin{color:#6b7385}
.charts{display:flex;gap:1rem;flex-wrap:wrap}figure.chart{flex:0 1 auto;margin:0;background:#fff;border:1px solid #e3e6ec;padding:.5rem .75rem}
figure.chart figcaption{font-weight:600;display:flex;justify-content:space-between;gap:1rem;flex-wrap:wrap}figure.chart svg{max-width:100%;height:auto;display:block}
.legend{font-weight:400}.legend .key::before{content:"";display:inline-block;width:.7rem;height:.7rem;margin:0 .3rem 0 .7rem;border-radius:2px;background:currentColor}
.key.s-ok{color:#6ea8fe}.key.s-error{color:#e57373}.key.s-p50{color:#2e7d32}.key.s-p99{color:#ef6c00}
rect.s-ok{fill:#6ea8fe}rect.s-error{fill:#e57373}path.line{fill:none;stroke-width:2}path.s-p50{stroke:#2e7d32}path.s-p99{stroke:#ef6c00}
circle.s-p50{fill:#2e7d32}circle.s-p99{fill:#ef6c00}.axis text{font-size:11px;fill:#6b7385}.axis line{stroke:#9aa3b2}.axis line.grid{stroke:#e9ecf1}
rect.hit{fill:transparent}rect.hit:hover{fill:rgba(29,35,48,.08)}.readout{margin:.2rem 0 0;min-height:1.2em;font-size:.85rem}
.ranges{margin:.3rem 0 .6rem}.ranges a{margin-right:.6rem}.ranges a.active{font-weight:700;color:#1d2330;text-decoration:none;border-bottom:2px solid #6ea8fe}
dl.figures{display:flex;flex-wrap:wrap;gap:.5rem 1.75rem;margin:.5rem 0}dl.figures dt{color:#6b7385;font-size:.85rem}dl.figures dd{margin:0;font-size:1.25rem;font-variant-numeric:tabular-nums}
table.settings th{width:9rem}.status-superseded,.status-cancelled,.status-dropped,.status-scheduled{color:#6b7385}.notice.error{background:#fdecea;border-color:#f5b7b1}
`;
