import type { MsgHdrs } from "@nats-io/transport-node";
import { headerValue } from "../nats/header-value";
import { DEBOUNCE_KEY_HEADER, isValidJobKey, SINGLETON_KEY_HEADER } from "./job-keys";
import { PRIORITY_HEADER, parseJobSubject } from "./priority";

/**
 * A job's flow-control labels as `jetfn status` shows them: its priority and its debounce or
 * singleton key, read from the job's message (its subject and headers). Anyone who may publish a
 * job can set these headers, so a value that is not a valid key or priority is left out rather
 * than shown.
 */
export interface FlowLabels {
  /** 1-3; absent for the default, 0. */
  priority?: number;
  debounceKey?: string;
  singletonKey?: string;
}

/** The labels of a job message: priority from a `fn.job.<name>.P<n>` subject or a `Jetfn-Priority` header. */
export function flowLabelsOf(subject: string, headers: MsgHdrs | undefined): FlowLabels {
  const labels: FlowLabels = {};
  const header = headerValue(headers, PRIORITY_HEADER) ?? "";
  const priority = /^[1-3]$/.test(header) ? Number(header) : (parseJobSubject(subject)?.priority ?? 0);
  if (priority > 0) labels.priority = priority;
  const debounceKey = validKey(headerValue(headers, DEBOUNCE_KEY_HEADER));
  if (debounceKey) labels.debounceKey = debounceKey;
  const singletonKey = validKey(headerValue(headers, SINGLETON_KEY_HEADER));
  if (singletonKey) labels.singletonKey = singletonKey;
  return labels;
}

/** The key headers to carry when a job moves from one subject to another (the delayed-jobs mover). */
export function keyHeadersOf(headers: MsgHdrs | undefined): [string, string][] {
  const carried: [string, string][] = [];
  for (const name of [DEBOUNCE_KEY_HEADER, SINGLETON_KEY_HEADER]) {
    const key = validKey(headerValue(headers, name));
    if (key) carried.push([name, key]);
  }
  return carried;
}

function validKey(value: string | undefined): string | undefined {
  return isValidJobKey(value) ? value : undefined;
}
