// What the cluster scenario's runtime children (cluster-child.ts) and the harness
// (runtime-children.ts) tell each other over the child's IPC channel.

/** From the harness: count anew from here on (after the warm-up drain), under this phase number. */
export interface PhaseMessage {
  type: "phase";
  phase: number;
}

/** From a child: ready (phase 0, nothing done yet), then the jobs it finished in the current phase. */
export interface ProgressMessage {
  type: "progress";
  phase: number;
  /** Jobs whose outcome this runtime recorded in this phase (its `job:done` events). */
  done: number;
  /** When its first job of the phase started and its latest one ended, in epoch ms (comparable across processes). */
  firstStartAt?: number;
  lastDoneAt?: number;
}

/** Whether a message from a child is a progress report. */
export function isProgressMessage(message: unknown): message is ProgressMessage {
  return (message as ProgressMessage | undefined)?.type === "progress";
}

/** Whether a message from the harness starts a phase. */
export function isPhaseMessage(message: unknown): message is PhaseMessage {
  return (message as PhaseMessage | undefined)?.type === "phase";
}
