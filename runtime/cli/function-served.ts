import type { NatsConnection } from "@nats-io/transport-node";
import { SERVICE_API_PREFIX, SERVICE_NAME, type ServiceInfo } from "../nats/service-discovery";
import { callSubject } from "../nats/subjects";

/** Longest to wait for the first runtime's answer. */
const MAX_WAIT_MS = 1_000;
/** Stop once no runtime answered for this long after the last one. */
const STALL_MS = 300;

/**
 * Whether any running runtime deploys `fn`, asked with the services protocol (`$SRV.INFO.jetfn`).
 * Returns at the first runtime that serves it; with none, after the replies stall (at most a
 * second). `undefined` when it cannot tell.
 */
export async function isFunctionServed(nc: NatsConnection, fn: string): Promise<boolean | undefined> {
  const subject = callSubject(fn);
  try {
    const replies = await nc.requestMany(`${SERVICE_API_PREFIX}.INFO.${SERVICE_NAME}`, "", {
      strategy: "stall",
      stall: STALL_MS,
      maxWait: MAX_WAIT_MS,
    });
    let answered = 0;
    for await (const reply of replies) {
      if (servesSubject(reply.data, subject)) return true;
      answered++;
    }
    // Silence without "no responders" is a NATS user that may not ask (an application's), not proof.
    return answered > 0 ? false : undefined;
  } catch (error) {
    // No runtime listens at all: nothing serves the function.
    if (/no responders/i.test((error as Error).message ?? "")) return false;
    return undefined;
  }
}

function servesSubject(data: Uint8Array, subject: string): boolean {
  try {
    const info = JSON.parse(new TextDecoder().decode(data)) as ServiceInfo;
    return info.type === "io.nats.micro.v1.info_response" && info.endpoints.some((e) => e.subject === subject);
  } catch {
    // Not an info reply (a status message or a stranger's reply).
    return false;
  }
}
