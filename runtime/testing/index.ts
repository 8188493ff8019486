// Testing functions the way production runs them: `import { startTestHarness, jetfnMatchers } from "jetfn/testing"`.
export type { CallRun, JobRun, TestHarness, TestHarnessOptions } from "./harness";
export { startTestHarness } from "./harness";
export type { JetfnMatchers } from "./matchers";
export { jetfnMatchers } from "./matchers";
export type { TestNatsOptions, TestNatsServer } from "./nats-server";
export { startNatsServer } from "./nats-server";
