import { expect, it } from "vitest";
import { openingWithStamp } from "../../runtime/db/transaction-parts";

const stamp = { functionName: "billing.charge", invocationId: "0b9c-41_x", attempt: 2, statementTimeoutMs: 30_000 };

it("writes the opening statements and the stamp as one message when every value is plain", () => {
  expect(openingWithStamp("begin", stamp)).toBe(
    "begin; select set_config('jetfn.function', 'billing.charge', true), set_config('jetfn.invocation_id', '0b9c-41_x', true), " +
      "set_config('jetfn.attempt', '2', true), set_config('statement_timeout', '30000', true)",
  );
});

it("leaves a value that is not plain to a parameterized stamp", () => {
  expect(openingWithStamp("begin", { ...stamp, functionName: "x'); drop table t; --" })).toBeUndefined();
  expect(openingWithStamp("begin", { ...stamp, invocationId: "a\\b" })).toBeUndefined();
});
