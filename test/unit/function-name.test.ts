import { describe, expect, it } from "vitest";
import { functionNameFromPath, isFunctionFile, isValidFunctionName } from "../../runtime/deploy/function-name";
import { consumerName } from "../../runtime/nats/subjects";

describe("function names", () => {
  it("derives the name from the path under functions/", () => {
    expect(functionNameFromPath("/app/functions", "/app/functions/send-mail.ts")).toBe("send-mail");
    expect(functionNameFromPath("/app/functions", "/app/functions/billing/charge.ts")).toBe("billing.charge");
  });

  it.each(["send-mail", "billing.charge", "a_b.c-d.e1"])("accepts %s", (name) => {
    expect(isValidFunctionName(name)).toBe(true);
  });

  it.each(["Send", "a b", "a*", "a>", "a..b", ".a", "a.", "", "émile"])("refuses %j", (name) => {
    expect(isValidFunctionName(name)).toBe(false);
  });

  it("deploys function files only: not helpers (_), hidden files, tests or declarations", () => {
    const root = "/app/functions";
    expect(isFunctionFile(root, "/app/functions/a.ts")).toBe(true);
    expect(isFunctionFile(root, "/app/functions/x/b.mjs")).toBe(true);
    expect(isFunctionFile(root, "/app/functions/_helper.ts")).toBe(false);
    expect(isFunctionFile(root, "/app/functions/_lib/b.ts")).toBe(false);
    expect(isFunctionFile(root, "/app/functions/.hidden.ts")).toBe(false);
    expect(isFunctionFile(root, "/app/functions/a.test.ts")).toBe(false);
    expect(isFunctionFile(root, "/app/functions/a.d.ts")).toBe(false);
    expect(isFunctionFile(root, "/app/functions/readme.md")).toBe(false);
    expect(isFunctionFile(root, "/app/other/a.ts")).toBe(false);
  });

  it("maps names to consumer names JetStream accepts, without collisions", () => {
    expect(consumerName("billing.charge")).toBe("billing:charge");
    expect(consumerName("billing_charge")).not.toBe(consumerName("billing.charge"));
  });
});
