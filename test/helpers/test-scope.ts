import { onTestFinished, TestRunner } from "vitest";

/** How long something a test starts lives. */
export interface TestScope {
  /** Keep it running after the test that started it, for the tests after it (whoever owns it stops it later). @default false */
  laterTestsUseIt?: boolean;
}

/**
 * Ties something a test started to that test: `stop` runs when the test ends, passed or failed, so
 * a failed test never leaves a runtime, server or database behind to disturb the tests after it.
 * Outside a test (in beforeAll, at a module's top level) it does nothing and returns false: the
 * hook that started the thing stops it.
 */
export function stopWhenTestEnds(stop: () => Promise<unknown>): boolean {
  if (!TestRunner.getCurrentTest()) return false;
  onTestFinished(async () => {
    await stop();
  });
  return true;
}
