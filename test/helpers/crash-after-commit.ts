// A runtime process that kills itself (SIGKILL, no cleanup) right after an invocation of
// CRASH_AFTER_COMMIT_OF has committed, before anything it committed is published: the crash the
// transactional outbox must survive. Prints "ready" once serving. Run with `node --import tsx`.
import { startRuntime } from "../../runtime/runtime";

const runtime = await startRuntime({ logLevel: "warn", maxAckWait: "2s" });
runtime.events.on("invocation:success", (event) => {
  if (event.fn === process.env.CRASH_AFTER_COMMIT_OF) process.kill(process.pid, "SIGKILL");
});
process.stdout.write("ready\n");
