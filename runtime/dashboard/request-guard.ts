import type { IncomingMessage } from "node:http";
import type { AllowedHosts } from "./allowed-hosts";

/** Why the dashboard will not answer a request, as a status and a sentence for whoever sent it. */
export interface Refusal {
  status: 403 | 421;
  message: string;
}

/**
 * Refuses a request that is not for this dashboard or, when it changes something, not from the
 * dashboard's own pages. Checked before the token: a token does not make a forged request genuine.
 */
export function refuseForeignRequest(request: IncomingMessage, hosts: AllowedHosts): Refusal | undefined {
  const host = request.headers.host;
  if (!hosts.allowsHost(host)) {
    // A DNS-rebinding page reaches the dashboard under its own name; so does a proxy that was not named.
    return {
      status: 421,
      message: `this dashboard does not answer to Host "${host ?? ""}"; behind a proxy, add the name it forwards to JETFN_DASHBOARD_HOSTS`,
    };
  }
  if (isSafeMethod(request.method)) return undefined;
  const reason = crossSiteReason(request, hosts);
  return reason === undefined
    ? undefined
    : { status: 403, message: `the dashboard refuses a ${request.method} from another site (${reason})` };
}

/** GET and HEAD only read; everything else must come from the dashboard's own pages. */
function isSafeMethod(method: string | undefined): boolean {
  return method === "GET" || method === "HEAD";
}

/**
 * Browsers say where a request comes from in Sec-Fetch-Site and Origin; both must name the
 * dashboard when sent. A request with neither is not from a browser page (curl with the token),
 * so the token alone decides.
 */
function crossSiteReason(request: IncomingMessage, hosts: AllowedHosts): string | undefined {
  const site = single(request.headers["sec-fetch-site"]);
  if (site !== undefined && site !== "same-origin" && site !== "none") return `Sec-Fetch-Site "${site}"`;
  const origin = single(request.headers.origin);
  if (origin !== undefined && !hosts.allowsOrigin(origin)) return `Origin "${origin}"`;
  return undefined;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(",") : value;
}
