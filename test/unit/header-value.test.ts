import { type MsgHdrs, headers as makeHeaders } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { headerValue } from "../../runtime/nats/header-value";

it("answers as nats.js's get() does, with undefined for an absent or empty header", () => {
  const headers = makeHeaders();
  headers.append("Jetfn-Id", "job-1");
  headers.append("Jetfn-Id", "job-2");
  headers.append("Jetfn-Empty", "");
  headers.append("jetfn-lower", "x");
  for (const name of ["Jetfn-Id", "Jetfn-Empty", "Jetfn-Lower", "jetfn-lower", "Jetfn-Absent"]) {
    expect(headerValue(headers, name), name).toBe(headers.get(name) || undefined);
  }
  expect(headerValue(headers, "Jetfn-Id")).toBe("job-1");
  expect(headerValue(undefined, "Jetfn-Id")).toBeUndefined();
});

it("asks get() of headers that keep no map of their own", () => {
  const foreign = { get: (name: string) => (name === "Jetfn-Id" ? "job-1" : "") } as unknown as MsgHdrs;
  expect(headerValue(foreign, "Jetfn-Id")).toBe("job-1");
  expect(headerValue(foreign, "Jetfn-Other")).toBeUndefined();
});
