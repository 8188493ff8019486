import { expect, it } from "vitest";
import { resolveConfig } from "../../runtime/config";

it("answers to _INBOX. and _R_. plus the prefixes of JETFN_INBOX_PREFIXES", () => {
  expect(resolveConfig({}, {}).inboxPrefixes).toEqual(["_INBOX.", "_R_."]);
  expect(resolveConfig({}, { JETFN_INBOX_PREFIXES: "app-1.inbox, app-2._INBOX." }).inboxPrefixes).toEqual([
    "_INBOX.",
    "_R_.",
    "app-1.inbox.",
    "app-2._INBOX.",
  ]);
});

it.each(["$JS.API", "jetfn.done", "fn.job", "a..b", "a.*", "a.>"])("refuses %s as an inbox prefix", (prefix) => {
  expect(() => resolveConfig({}, { JETFN_INBOX_PREFIXES: prefix })).toThrow(/JETFN_INBOX_PREFIXES/);
});
