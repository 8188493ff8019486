import { expect } from "vitest";
import { type JetfnMatchers, jetfnMatchers } from "../../runtime/testing";

expect.extend(jetfnMatchers);

declare module "vitest" {
  // biome-ignore lint/suspicious/noExplicitAny: vitest's own declaration uses `any` here.
  interface Assertion<T = any> extends JetfnMatchers<T> {}
}
