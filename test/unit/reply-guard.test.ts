import type { Msg } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { createReplyGuard, DEFAULT_INBOX_PREFIXES } from "../../runtime/nats/reply-guard";
import { createEmitter } from "../../runtime/triggers/events";
import { captureLogs } from "../helpers/logs";

function request(reply: string): Msg {
  return { subject: "jetfn.api.status", reply } as Msg;
}

function guard(prefixes: readonly string[] = DEFAULT_INBOX_PREFIXES) {
  const events = createEmitter();
  const logs = captureLogs();
  const refused: string[] = [];
  events.on("reply:refused", (event) => refused.push(event.reply));
  return { guard: createReplyGuard({ prefixes, events, logger: logs.logger }), refused, logs };
}

it.each(["_INBOX.abc", "_INBOX.abc.7", "_R_.xyz.abc", "_GR_.c1hash.s1hash._INBOX.abc.1"])(
  "answers to the inbox %s",
  (reply) => {
    const { guard: replyGuard, refused } = guard();
    expect(replyGuard.accepts(request(reply), "status")).toBe(true);
    expect(refused).toEqual([]);
  },
);

it.each([
  "$JS.API.STREAM.PURGE.JETFN_JOBS",
  "jetfn.done.victim-job",
  "fn.job.add",
  "_INBOX.",
  "_INBOX.*",
  "_INBOX.>",
  "_GR_.c1hash.s1hash.$JS.API.STREAM.DELETE.JETFN_JOBS",
  "$KV.JETFN_PROGRESS.x",
  "app-1.inbox.abc",
])("refuses the reply subject %s", (reply) => {
  const { guard: replyGuard, refused } = guard();
  expect(replyGuard.accepts(request(reply), "status")).toBe(false);
  expect(refused).toEqual([reply]);
});

it("answers to an extra prefix it is given", () => {
  const { guard: replyGuard } = guard([...DEFAULT_INBOX_PREFIXES, "app-1.inbox."]);
  expect(replyGuard.accepts(request("app-1.inbox.abc"), "call")).toBe(true);
});

it("warns once per minute with the count of refusals since the last warning", () => {
  const { guard: replyGuard, refused, logs } = guard();
  for (let index = 0; index < 50; index++) replyGuard.accepts(request(`jetfn.done.job-${index}`), "status");
  expect(refused).toHaveLength(50);
  const warnings = logs.matching("not an inbox");
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatchObject({ api: "status", reply: "jetfn.done.job-0", refused: 1 });
});
