import { hostname, networkInterfaces } from "node:os";
import { JetfnError } from "../support/errors";

/** The names under which the dashboard answers: what a browser showing it puts in Host and Origin. */
export interface AllowedHosts {
  /** Whether a Host header (`name`, `name:port`, `[v6]:port`) names the dashboard. */
  allowsHost(header: string | undefined): boolean;
  /** Whether an Origin header (`http://name:port`, `https://name`) is a page of the dashboard. */
  allowsOrigin(header: string | undefined): boolean;
}

/** A host name with a port, or with `undefined` for any port (a configured name behind a proxy). */
interface HostEntry {
  name: string;
  port: number | undefined;
}

const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"];
const WILDCARDS = new Set(["0.0.0.0", "::", "[::]", ""]);
// Letters, digits, dots, dashes and underscores (container names), or a bracketed IPv6 literal;
// an optional port. Nothing else: URL parsing alone would read "attacker@127.0.0.1" as 127.0.0.1.
const HOST_PATTERN = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/;

/**
 * The names a dashboard bound to `boundHost` answers to, on the port it listens on (`port()`, read
 * once listening): that address; on loopback also localhost, 127.0.0.1 and [::1]; on a wildcard
 * address also every interface's address, the loopback names and the machine's name; plus `extra`
 * (JETFN_DASHBOARD_HOSTS: names a proxy forwards, `name` for any port or `name:port`). A
 * DNS-rebinding page sends its own name, which is none of these. Throws E_CONFIG_INVALID for an
 * `extra` that is not a host.
 */
export function resolveAllowedHosts(boundHost: string, extra: readonly string[], port: () => number): AllowedHosts {
  const configured = extra.map(parseExtra);
  const bound = boundNames(boundHost);
  const allows = (host: HostEntry | undefined) =>
    host !== undefined &&
    (bound.some((name) => name === host.name && port() === host.port) ||
      configured.some((entry) => entry.name === host.name && (entry.port === undefined || entry.port === host.port)));
  return {
    allowsHost: (header) => allows(header === undefined ? undefined : parseHost(header, 80)),
    allowsOrigin: (header) => allows(header === undefined ? undefined : parseOrigin(header)),
  };
}

/** Names of the bound address itself, in their canonical form. */
function boundNames(boundHost: string): string[] {
  if (isLoopback(boundHost)) return [...LOOPBACK_NAMES, canonicalName(boundHost)].filter(isString);
  if (!WILDCARDS.has(boundHost)) return [canonicalName(boundHost)].filter(isString);
  const addresses = Object.values(networkInterfaces())
    .flat()
    .map((address) => address?.address)
    .filter(isString);
  // The wildcard itself too: the logged URL names it, and some browsers open it as this machine.
  return [boundHost, ...LOOPBACK_NAMES, hostname(), ...addresses].map(canonicalName).filter(isString);
}

/** Whether the dashboard listens on loopback only (reads need no token there). */
export function isLoopback(boundHost: string): boolean {
  return boundHost === "localhost" || boundHost === "::1" || /^127\.\d+\.\d+\.\d+$/.test(boundHost);
}

function parseExtra(text: string): HostEntry {
  const entry = parseHost(text, undefined);
  if (!entry) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `JETFN_DASHBOARD_HOSTS: "${text}" is not a host name or address with an optional port (dash.example.com, dash.example.com:8443, [2001:db8::1])`,
    );
  }
  return entry;
}

/** Reads `name[:port]`; a missing port becomes `defaultPort`. Undefined when it is not a host. */
function parseHost(text: string, defaultPort: number | undefined): HostEntry | undefined {
  const match = HOST_PATTERN.exec(text.trim());
  const name = match ? canonicalName(match[1] as string) : undefined;
  if (!match || name === undefined) return undefined;
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  return port === undefined || port <= 65_535 ? { name, port } : undefined;
}

/** Reads an Origin; "null" (sandboxed frames, file: pages) and other schemes name no host. */
function parseOrigin(text: string): HostEntry | undefined {
  const match = /^(https?):\/\/([^/?#]+)$/.exec(text.trim());
  if (!match) return undefined;
  return parseHost(match[2] as string, match[1] === "https" ? 443 : 80);
}

/** Lower case, IPv6 bracketed and compressed ("[0:0::1]" and "::1" both become "[::1]"). */
function canonicalName(name: string): string | undefined {
  const bracketed = name.includes(":") && !name.startsWith("[") ? `[${name}]` : name;
  try {
    return new URL(`http://${bracketed}/`).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

function isString(value: string | undefined): value is string {
  return typeof value === "string" && value !== "";
}
