import type { OutboxMessage } from "../../runtime/outbox/outbox-message";

/** A resumption's tag: its shape; only a runtime can tell whether it verifies. */
const TAG = "A".repeat(22);

/** Outbox rows and whether the outbox rules accept them, for the relay's and the database's checks alike. */
export const OUTBOX_RULE_CASES: { name: string; row: OutboxMessage; accepted: boolean }[] = [
  { name: "a job", row: job("job-0001"), accepted: true },
  { name: "a job of a nested function", row: job("job-0002", "billing.charge"), accepted: true },
  {
    name: "a job whose id names another function",
    row: { ...job("job-0011"), subject: "fn.job.billing.charge" },
    accepted: false,
  },
  { name: "a job whose id is only the invocation id", row: { ...job("job-0012"), id: "job-0012" }, accepted: false },
  { name: "a job without Jetfn-Id", row: { ...job("job-0003"), headers: {} }, accepted: true },
  {
    name: "a delayed job",
    row: { ...job("job-0004"), headers: { "Jetfn-Id": "job-0004", "Jetfn-Not-Before": "1893456000000" } },
    accepted: true,
  },
  {
    name: "a due time without Jetfn-Id",
    row: { ...job("evil-0011"), headers: { "Jetfn-Not-Before": "1893456000000" } },
    accepted: false,
  },
  {
    name: "a due time that is not digits",
    row: { ...job("evil-0012"), headers: { "Jetfn-Id": "evil-0012", "Jetfn-Not-Before": "1\r\nNats-Rollup: all" } },
    accepted: false,
  },
  {
    name: "a due time of 16 digits",
    row: { ...job("evil-0013"), headers: { "Jetfn-Id": "evil-0013", "Jetfn-Not-Before": "1".repeat(16) } },
    accepted: false,
  },
  {
    name: "a delayed job with a third header",
    row: {
      ...job("evil-0014"),
      headers: { "Jetfn-Id": "evil-0014", "Jetfn-Not-Before": "1893456000000", "Nats-Rollup": "all" },
    },
    accepted: false,
  },
  {
    name: "a job with a priority",
    row: { ...job("job-0005"), headers: { "Jetfn-Id": "job-0005", "Jetfn-Priority": "3" } },
    accepted: true,
  },
  {
    name: "a delayed job with a priority",
    row: {
      ...job("job-0006"),
      headers: { "Jetfn-Id": "job-0006", "Jetfn-Not-Before": "1893456000000", "Jetfn-Priority": "1" },
    },
    accepted: true,
  },
  {
    name: "a priority out of range",
    row: { ...job("evil-0015"), headers: { "Jetfn-Id": "evil-0015", "Jetfn-Priority": "4" } },
    accepted: false,
  },
  {
    name: "a priority that smuggles a header",
    row: { ...job("evil-0016"), headers: { "Jetfn-Id": "evil-0016", "Jetfn-Priority": "1\r\nNats-Rollup: all" } },
    accepted: false,
  },
  {
    name: "a priority without Jetfn-Id",
    row: { ...job("evil-0017"), headers: { "Jetfn-Priority": "2" } },
    accepted: false,
  },
  {
    name: "a prioritised job with a third header",
    row: {
      ...job("evil-0018"),
      headers: { "Jetfn-Id": "evil-0018", "Jetfn-Priority": "2", "Jetfn-Debounce-Key": "k" },
    },
    accepted: false,
  },
  { name: "a singleton job", row: keyed("job-0007", { "Jetfn-Singleton-Key": "tenant:7/report" }), accepted: true },
  {
    name: "a delayed singleton job with a priority",
    row: keyed("job-0008", {
      "Jetfn-Singleton-Key": "nightly",
      "Jetfn-Not-Before": "1893456000000",
      "Jetfn-Priority": "2",
    }),
    accepted: true,
  },
  {
    name: "a debounced job",
    row: keyed("job-0009", { "Jetfn-Debounce-Key": "doc:7", "Jetfn-Debounce-Period": "1000" }),
    accepted: true,
  },
  {
    name: "a debounced job with a max wait and a priority",
    row: keyed("job-0010", {
      "Jetfn-Debounce-Key": "a+b=c@d.e_f-g",
      "Jetfn-Debounce-Period": "100",
      "Jetfn-Debounce-Max-Wait": "86400000",
      "Jetfn-Priority": "1",
    }),
    accepted: true,
  },
  {
    name: "a debounce max wait equal to its period",
    row: keyed("job-0013", {
      "Jetfn-Debounce-Key": "k",
      "Jetfn-Debounce-Period": "2000",
      "Jetfn-Debounce-Max-Wait": "2000",
    }),
    accepted: true,
  },
  {
    name: "a key of 128 characters",
    row: keyed("job-0014", { "Jetfn-Singleton-Key": "k".repeat(128) }),
    accepted: true,
  },
  {
    name: "a key of 129 characters",
    row: keyed("evil-0019", { "Jetfn-Singleton-Key": "k".repeat(129) }),
    accepted: false,
  },
  { name: "an empty key", row: keyed("evil-0020", { "Jetfn-Singleton-Key": "" }), accepted: false },
  { name: "a key with a space", row: keyed("evil-0021", { "Jetfn-Singleton-Key": "a b" }), accepted: false },
  { name: "a key with a wildcard", row: keyed("evil-0022", { "Jetfn-Singleton-Key": "tenant.>" }), accepted: false },
  {
    name: "a key that smuggles a header",
    row: keyed("evil-0023", { "Jetfn-Debounce-Key": "k\r\nNats-Rollup: all", "Jetfn-Debounce-Period": "1000" }),
    accepted: false,
  },
  { name: "a non-ASCII key", row: keyed("evil-0024", { "Jetfn-Singleton-Key": "clé" }), accepted: false },
  { name: "a key that is not a string", row: keyed("evil-0025", { "Jetfn-Singleton-Key": 7 }), accepted: false },
  {
    name: "both a singleton and a debounce key",
    row: keyed("evil-0026", {
      "Jetfn-Singleton-Key": "k",
      "Jetfn-Debounce-Key": "k",
      "Jetfn-Debounce-Period": "1000",
    }),
    accepted: false,
  },
  { name: "a debounce key without a period", row: keyed("evil-0027", { "Jetfn-Debounce-Key": "k" }), accepted: false },
  {
    name: "a debounce period below 100 ms",
    row: keyed("evil-0028", { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "99" }),
    accepted: false,
  },
  {
    name: "a debounce period over 24 h",
    row: keyed("evil-0029", { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "86400001" }),
    accepted: false,
  },
  {
    name: "a debounce period written as a duration",
    row: keyed("evil-0030", { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "5s" }),
    accepted: false,
  },
  {
    name: "a debounce period of 9 digits",
    row: keyed("evil-0031", { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "000001000" }),
    accepted: false,
  },
  {
    name: "a debounce max wait below its period",
    row: keyed("evil-0032", {
      "Jetfn-Debounce-Key": "k",
      "Jetfn-Debounce-Period": "2000",
      "Jetfn-Debounce-Max-Wait": "1999",
    }),
    accepted: false,
  },
  {
    name: "a debounce max wait that is not digits",
    row: keyed("evil-0033", {
      "Jetfn-Debounce-Key": "k",
      "Jetfn-Debounce-Period": "2000",
      "Jetfn-Debounce-Max-Wait": "-1",
    }),
    accepted: false,
  },
  {
    name: "a debounce period without a key",
    row: keyed("evil-0034", { "Jetfn-Debounce-Period": "1000" }),
    accepted: false,
  },
  {
    name: "a singleton with a debounce max wait",
    row: keyed("evil-0035", { "Jetfn-Singleton-Key": "k", "Jetfn-Debounce-Max-Wait": "1000" }),
    accepted: false,
  },
  {
    name: "a debounced job with a due time",
    row: keyed("evil-0036", {
      "Jetfn-Debounce-Key": "k",
      "Jetfn-Debounce-Period": "1000",
      "Jetfn-Not-Before": "1893456000000",
    }),
    accepted: false,
  },
  {
    name: "a keyed job without Jetfn-Id",
    row: { ...job("evil-0037"), headers: { "Jetfn-Singleton-Key": "k" } },
    accepted: false,
  },
  {
    name: "a keyed job with a fourth header",
    row: keyed("evil-0038", { "Jetfn-Singleton-Key": "k", "Nats-Rollup": "all" }),
    accepted: false,
  },
  { name: "an event", row: event("3f1c0a9e-2b7d-4c1e-9a55-0d6f1b2c3d4e"), accepted: true },
  { name: "an event with a short printable id", row: event("order:12/created"), accepted: true },
  {
    name: "a JetStream API subject",
    row: { ...job("evil-0001"), subject: "$JS.API.STREAM.PURGE.JETFN_JOBS" },
    accepted: false,
  },
  { name: "a done notice", row: { ...job("evil-0002"), subject: "jetfn.done.victim-000001" }, accepted: false },
  { name: "a job for an invalid name", row: { ...job("evil-0003"), subject: "fn.job.Bad-Name" }, accepted: false },
  { name: "a job for a wildcard", row: { ...job("evil-0004"), subject: "fn.job.*" }, accepted: false },
  { name: "a subject with a space", row: { ...job("evil-0005"), subject: "fn.job.a b" }, accepted: false },
  { name: "an empty function name", row: { ...job("evil-0006"), subject: "fn.job." }, accepted: false },
  { name: "an event for a pattern", row: { ...event("e-1"), subject: "fn.event.comment.>" }, accepted: false },
  {
    name: "a job with a rollup header",
    row: { ...job("evil-0007"), headers: { "Jetfn-Id": "evil-0007", "Nats-Rollup": "all" } },
    accepted: false,
  },
  {
    name: "a job claiming another job's id",
    row: { ...job("evil-0008"), headers: { "Jetfn-Id": "victim-0001" } },
    accepted: false,
  },
  {
    name: "a job with Nats-Msg-Id",
    row: { ...job("evil-0009"), headers: { "Nats-Msg-Id": "evil-0009" } },
    accepted: false,
  },
  { name: "a job with a short id", row: job("short"), accepted: false },
  { name: "a job id with a line break", row: job("evil-0010\r\nNats-Rollup: all"), accepted: false },
  {
    name: "an event with a header",
    row: { ...event("e-2"), headers: { "Nats-Expected-Stream": "X" } },
    accepted: false,
  },
  { name: "an event id with a space", row: event("order 12"), accepted: false },
  { name: "an event id of 129 characters", row: event("e".repeat(129)), accepted: false },
  // A durable sleep's resumption (invocation/resume-tag.ts): its tag is checked where it runs.
  { name: "a resumption", row: resumption("job-0021"), accepted: true },
  {
    name: "a resumption with a priority",
    row: resumption("job-0022", { "Jetfn-Priority": "2" }),
    accepted: true,
  },
  {
    name: "a resumption without a due time",
    row: { ...resumption("job-0023"), headers: { "Jetfn-Id": "job-0023", "Jetfn-Resume": `2s1.${TAG}` } },
    accepted: true,
  },
  { name: "a resumption with a body", row: { ...resumption("evil-0021"), body: "{}" }, accepted: false },
  {
    name: "a resumption whose header's token is not its id's",
    row: resumption("evil-0022", { "Jetfn-Resume": `3s1.${TAG}` }),
    accepted: false,
  },
  {
    name: "a resumption whose header's tag is too short",
    row: resumption("evil-0027", { "Jetfn-Resume": "2s1.AAAA" }),
    accepted: false,
  },
  {
    name: "a resumption whose Jetfn-Id is another job's",
    row: resumption("evil-0023", { "Jetfn-Id": "job-0001" }),
    accepted: false,
  },
  {
    name: "a resumption with a key header",
    row: resumption("evil-0024", { "Jetfn-Singleton-Key": "k" }),
    accepted: false,
  },
  {
    name: "a resumption with a line break in its token",
    row: resumption("evil-0025", { "Jetfn-Resume": `2s1\r\nNats-Rollup: all.${TAG}` }),
    accepted: false,
  },
  {
    name: "a resumption whose id is the job's",
    row: { ...resumption("evil-0026"), id: "send-mail:evil-0026" },
    accepted: false,
  },
];

function resumption(id: string, headers: Record<string, string> = {}): OutboxMessage {
  return {
    id: `send-mail:${id}:2s1:${TAG}`,
    subject: "fn.job.send-mail",
    headers: { "Jetfn-Id": id, "Jetfn-Resume": `2s1.${TAG}`, "Jetfn-Not-Before": "1893456000000", ...headers },
    body: "",
  };
}

function job(id: string, fn = "send-mail"): OutboxMessage {
  return { id: `${fn}:${id}`, subject: `fn.job.${fn}`, headers: { "Jetfn-Id": id }, body: "{}" };
}

/** A job row with `Jetfn-Id` and `extra` headers (values of any JSON type, as a hostile row may have). */
function keyed(id: string, extra: Record<string, unknown>): OutboxMessage {
  return { ...job(id), headers: { "Jetfn-Id": id, ...extra } as Record<string, string> };
}

function event(id: string): OutboxMessage {
  return { id, subject: "fn.event.comment.created", headers: {}, body: "{}" };
}
