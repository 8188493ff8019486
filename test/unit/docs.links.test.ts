// Every relative link in the README, the top-level pages and docs/ must lead somewhere: to a file
// that exists and, when it names a heading (`page.md#heading`), to a heading of that page. Pages
// move and headings get renamed; a reader who follows a dead link is lost.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** README.md and the other top-level pages, and every page under docs/. */
function pages(): string[] {
  const top = readdirSync(ROOT).filter((name) => name.endsWith(".md"));
  const docs = readdirSync(path.join(ROOT, "docs"), { recursive: true })
    .map(String)
    .filter((name) => name.endsWith(".md"))
    .map((name) => path.join("docs", name));
  return [...top, ...docs].sort();
}

/** Markdown without fenced code blocks and code spans, where brackets are not links. */
function prose(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, "").replace(/`[^`\n]*`/g, "code");
}

/** Targets of inline links and images, `[text](target)`, and of reference definitions. */
function linkTargets(markdown: string): string[] {
  const text = prose(markdown);
  const inline = [...text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)];
  const references = [...text.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/gm)];
  return [...inline, ...references].map((match) => match[1] as string);
}

/** The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as `-`. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  const withoutCode = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, "");
  for (const [, heading] of withoutCode.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const slug = (heading as string)
      .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

/** Why a link from `page` to `target` leads nowhere, or undefined when it is fine. */
function brokenReason(page: string, target: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return undefined;
  const [file = "", anchor] = target.split("#", 2);
  const resolved = file === "" ? path.join(ROOT, page) : path.resolve(path.dirname(path.join(ROOT, page)), file);
  if (!existsSync(resolved)) return `${target}: ${path.relative(ROOT, resolved)} does not exist`;
  if (anchor === undefined || !resolved.endsWith(".md") || statSync(resolved).isDirectory()) return undefined;
  const anchors = headingAnchors(readFileSync(resolved, "utf8"));
  const wanted = decodeURIComponent(anchor).toLowerCase();
  return anchors.has(wanted) ? undefined : `${target}: no heading #${wanted} in ${path.relative(ROOT, resolved)}`;
}

describe("links in the docs", () => {
  it("finds the README and the docs index", () => {
    expect(pages()).toEqual(expect.arrayContaining(["README.md", path.join("docs", "README.md")]));
  });

  it.each(pages())("every relative link in %s leads to a file and heading that exist", (page) => {
    const markdown = readFileSync(path.join(ROOT, page), "utf8");
    const broken = linkTargets(markdown)
      .map((target) => brokenReason(page, target))
      .filter((reason) => reason !== undefined);
    expect(broken).toEqual([]);
  });

  it("catches a dead link, a dead anchor, and ignores links inside code", () => {
    expect(linkTargets("see [a](nowhere.md) and `[b](code.md)`\n```\n[c](fenced.md)\n```\n")).toEqual(["nowhere.md"]);
    expect(brokenReason("README.md", "docs/nowhere.md")).toMatch(/does not exist/);
    expect(brokenReason("README.md", "docs/README.md#no-such-heading")).toMatch(/no heading/);
    expect(brokenReason("README.md", "https://example.com/x.md")).toBeUndefined();
  });

  it("gives headings GitHub's anchors", () => {
    const anchors = headingAnchors('# A `jetfn.invocations` row\n## With `isolation: "thread"`\n## Same\n## Same\n');
    expect([...anchors]).toEqual(["a-jetfninvocations-row", "with-isolation-thread", "same", "same-1"]);
  });
});
