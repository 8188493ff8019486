import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { invocationChanges, listAuditEntries, rowHistory } from "../audit/audit-queries";
import { verifyAudit } from "../audit/audit-verify";
import { listDeadLetters } from "../db/dead-letters";
import { parseTime } from "../inspect/time-input";
import { unrecordedJobFinder } from "../nats/stored-job";
import type { Runtime } from "../runtime";
import { createClient, type JetfnClient } from "../sdk/client";
import { JetfnError, toJetfnError } from "../support/errors";
import { presentedTokens, sameToken, signInUrl, tokenCookie } from "./access-token";
import { isLoopback, resolveAllowedHosts } from "./allowed-hosts";
import { DEFAULT_DASHBOARD_PORT } from "./default-port";
import { errorPage } from "./error-page";
import { functionRoutes } from "./function-routes";
import { layout } from "./html";
import { invocationFilters, listInvocations, typedFilters } from "./invocation-list";
import { refuseForeignRequest } from "./request-guard";
import { type Handler, lastSegment, type Reply, type Route, type Session } from "./route";
import { SIGN_IN_PATH, safeNext, signInNeeded, signInPage, signInWithForm } from "./sign-in";
import { type AuditFilters, auditPage } from "./views/audit";
import { deadLettersPage } from "./views/dead-letters";
import { type InvocationFilters, invocationPage, invocationSummary, invocationsPage } from "./views/invocations";

/** Where and how the dashboard listens. */
export interface DashboardOptions {
  runtime: Runtime;
  /** @default 4280 */
  port?: number;
  /** Loopback unless set otherwise; anywhere else every page needs the token. @default "127.0.0.1" */
  host?: string;
  /** Access token; random when omitted. Retry and drop always need it. */
  token?: string;
  /**
   * More names the dashboard answers to (Host and Origin), for a proxy in front of it: `name` (any
   * port) or `name:port`. The bound address, and localhost on loopback, are always allowed.
   * @default none (`jetfn dev` and `start` pass JETFN_DASHBOARD_HOSTS)
   */
  allowedHosts?: readonly string[];
}

/** A running dashboard. */
export interface Dashboard {
  /** Base URL (without the token). */
  readonly url: string;
  /** The URL that signs a browser in (sets the token cookie). */
  readonly signInUrl: string;
  close(): Promise<void>;
}

// Every answer: never framed (clickjacking retry/drop), sniffed, cached (inputs and results), or
// named in a Referer to another site (the sign-in URL carries the token). Not "no-referrer": with it,
// browsers send "Origin: null" on the dashboard's own form posts, which the origin check refuses.
const SECURITY_HEADERS = {
  "referrer-policy": "same-origin",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "content-security-policy": "frame-ancestors 'none'",
  "cache-control": "no-store",
};

/** Serves the dashboard from a runtime process: functions, invocations, audit log, dead letters. */
export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  const { runtime } = options;
  const host = options.host ?? "127.0.0.1";
  const token = options.token ?? randomBytes(16).toString("hex");
  const openReads = isLoopback(host);
  const allowedHosts = resolveAllowedHosts(
    host,
    options.allowedHosts ?? [],
    () => (server.address() as AddressInfo).port,
  );
  const client = await createClient({ connection: runtime.nats });
  const routes = [...functionRoutes(runtime), ...buildRoutes(runtime, client)];

  const server = createServer((request, response) => {
    void serve(request, response).catch((error: unknown) => {
      runtime.logger.error({ err: error, url: request.url }, "A dashboard request failed.");
      if (!response.headersSent) send(response, errorPage(500, "error", toJetfnError(error).message));
    });
  });

  async function serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const refusal = refuseForeignRequest(request, allowedHosts);
    if (refusal) return send(response, { status: refusal.status, type: "text/plain", body: refusal.message });
    const url = new URL(request.url ?? "/", "http://dashboard");
    const given = url.searchParams.get("token");
    if (given !== null && sameToken(given, token)) {
      url.searchParams.delete("token");
      response.setHeader("set-cookie", tokenCookie(token));
      return send(response, { status: 303, location: localPath(url) });
    }
    if (request.method === "POST" && url.pathname === SIGN_IN_PATH) {
      return send(response, await signInWithForm(request, token));
    }
    const authorised = presentedTokens(request).some((presented) => sameToken(presented, token));
    const writes = request.method !== "GET" && request.method !== "HEAD";
    const signInPage = !writes && url.pathname === SIGN_IN_PATH;
    if (!authorised && (writes || !openReads) && !signInPage) return send(response, signInNeeded(url, writes));
    const route = routes.find(
      (candidate) => candidate.method === request.method && candidate.pattern.test(url.pathname),
    );
    if (!route) return send(response, errorPage(404, "not found", `nothing is served at ${url.pathname}`));
    send(response, await answer(route.handler, request, url, { signedIn: authorised }));
  }

  const stopServing = async (): Promise<void> => {
    await client.close();
  };
  const port = options.port ?? DEFAULT_DASHBOARD_PORT;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) =>
      reject(
        new JetfnError("E_CONFIG_INVALID", `dashboard port ${port} on ${host}: ${error.message}`, { cause: error }),
      ),
    );
    server.listen(port, host, () => resolve());
  }).catch(async (error: unknown) => {
    // A busy port costs `jetfn dev` only the dashboard: leave nothing of it behind on the runtime.
    await stopServing();
    throw error;
  });
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${(server.address() as AddressInfo).port}`;
  return {
    url,
    signInUrl: signInUrl(url, token),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await stopServing();
    },
  };
}

/** Invocations, audit, dead letters, sign-in and the actions. */
function buildRoutes(runtime: Runtime, client: JetfnClient): Route[] {
  const page = (title: string, tab: string, body: Parameters<typeof layout>[2]): Reply => ({
    body: layout(title, tab, body),
  });
  // A pending job's page reads the stream's backlog: a few such reads at once, the rest show less.
  const unrecorded = unrecordedJobFinder(runtime.nats, runtime.config.streamName);
  let jsm: Promise<JetStreamManager> | undefined;
  const manager = () => {
    jsm ??= jetstreamManager(runtime.nats);
    return jsm;
  };
  const idFrom = (url: URL) => lastSegment(url);
  const toDeadLetters = (message: string, fn?: string): Reply => ({
    status: 303,
    location: `/dead-letters?${new URLSearchParams({ ...(fn ? { function: fn } : {}), message })}`,
  });
  const retryAll = async (url: URL): Promise<Reply> => {
    const fn = param(url, "function");
    if (!fn)
      throw new JetfnError("E_INPUT_INVALID", "retry all needs a function: filter the dead letters by one first");
    try {
      // The same request as `jetfn retry --function <fn> --all`.
      const retried = await client.retryDeadLetters(fn);
      return toDeadLetters(
        retried.length === 0 ? `no dead jobs of ${fn} to retry` : `retried ${retried.length} dead job(s) of ${fn}`,
        fn,
      );
    } catch (error) {
      return toDeadLetters(`could not retry the dead jobs of ${fn}: ${toJetfnError(error).message}`, fn);
    }
  };
  const cancel = async (url: URL): Promise<Reply> => {
    const id = lastSegment(url, 2);
    let message: string;
    try {
      await client.cancel(id, { reason: "cancelled from the dashboard" });
      message = `cancelled ${id}`;
    } catch (error) {
      message = `could not cancel ${id}: ${toJetfnError(error).message}`;
    }
    return { status: 303, location: `/invocations/${encodeURIComponent(id)}?message=${encodeURIComponent(message)}` };
  };
  const deadLetterAction = async (url: URL, action: "retry" | "drop"): Promise<Reply> => {
    const id = lastSegment(url, 2);
    let message: string;
    try {
      message =
        action === "retry"
          ? `retried ${id} as ${(await client.retryDeadLetter(id)).newId ?? "a new job"}`
          : `dropped ${(await client.dropDeadLetter(id)).id}`;
    } catch (error) {
      message = `could not ${action} ${id}: ${toJetfnError(error).message}`;
    }
    return { status: 303, location: `/dead-letters?message=${encodeURIComponent(message)}` };
  };
  return [
    {
      method: "GET",
      pattern: new RegExp(`^${SIGN_IN_PATH}$`),
      handler: async (_request, url, session) => {
        const next = safeNext(url.searchParams.get("next"));
        if (session.signedIn) return { status: 303, location: next };
        return page("sign in", "", signInPage(next, url.searchParams.has("token")));
      },
    },
    {
      method: "GET",
      pattern: /^\/invocations$/,
      handler: async (_request, url) => {
        let filters: InvocationFilters;
        try {
          filters = invocationFilters(url);
        } catch (error) {
          const failure = toJetfnError(error);
          if (failure.code !== "E_INPUT_INVALID") throw error;
          const body = invocationsPage({ rows: [], more: false }, typedFilters(url), failure.message);
          return { status: 400, body: layout("invocations", "invocations", body) };
        }
        const list = await listInvocations(runtime, await manager(), filters);
        return page("invocations", "invocations", invocationsPage(list, filters));
      },
    },
    {
      method: "GET",
      pattern: /^\/invocations\/[^/]+$/,
      handler: async (_request, url, session) => {
        const id = idFrom(url);
        const [view, changes] = await Promise.all([
          client.status(id, { steps: true }),
          invocationChanges(runtime.database.db, id),
        ]);
        // A queued job has no record yet: its priority and keys are on its message in the stream,
        // which the status API reads when it has a turn free (it then names the job's function);
        // else the page reads it, when one of its own turns is free (any page load may ask).
        const stored =
          view.status === "pending" && view.function === null ? await unrecorded.findIfFree(id) : undefined;
        return page(
          `invocation ${id}`,
          "invocations",
          invocationPage(stored ? { ...view, ...stored.labels } : view, changes, {
            signedIn: session.signedIn,
            message: param(url, "message"),
          }),
        );
      },
    },
    {
      method: "GET",
      pattern: /^\/fragments\/invocations\/[^/]+$/,
      // Asked every second while the page is open: the summary shows no labels, so no stream read.
      handler: async (_request, url) => ({
        body: invocationSummary(await client.status(idFrom(url), { stream: false, steps: true })).value,
      }),
    },
    {
      method: "GET",
      pattern: /^\/audit$/,
      handler: async (_request, url) => {
        const filters: AuditFilters = {
          function: param(url, "function"),
          table: param(url, "table"),
          invocation: param(url, "invocation"),
          since: param(url, "since"),
          row: param(url, "row"),
        };
        const db = runtime.database.db;
        const entries =
          filters.row && filters.table
            ? await rowHistory(db, filters.table, parseRow(filters.row))
            : await listAuditEntries(db, {
                function: filters.function,
                table: filters.table,
                invocationId: filters.invocation,
                since: filters.since ? parseTime(filters.since) : undefined,
                limit: 200,
              });
        const chain = await verifyAudit(db, runtime.nats);
        return page("audit log", "audit", auditPage(entries, filters, chain));
      },
    },
    {
      method: "GET",
      pattern: /^\/dead-letters$/,
      handler: async (_request, url, session) => {
        const fn = param(url, "function");
        const dead = await listDeadLetters(runtime.database.sql, { fn });
        return page(
          "dead letters",
          "dead letters",
          deadLettersPage(dead, { message: param(url, "message"), function: fn, signedIn: session.signedIn }),
        );
      },
    },
    {
      method: "POST",
      pattern: /^\/dead-letters\/retry-all$/,
      handler: (_request, url) => retryAll(url),
    },
    {
      method: "POST",
      pattern: /^\/invocations\/[^/]+\/cancel$/,
      handler: (_request, url) => cancel(url),
    },
    {
      method: "POST",
      pattern: /^\/dead-letters\/[^/]+\/retry$/,
      handler: (_request, url) => deadLetterAction(url, "retry"),
    },
    {
      method: "POST",
      pattern: /^\/dead-letters\/[^/]+\/drop$/,
      handler: (_request, url) => deadLetterAction(url, "drop"),
    },
  ];
}

/**
 * Runs a page's handler. Bad input (a filter that is not a time, an unknown status) is answered
 * 400 with the reason on a page, not as a server error.
 */
async function answer(handler: Handler, request: IncomingMessage, url: URL, session: Session): Promise<Reply> {
  try {
    return await handler(request, url, session);
  } catch (error) {
    const failure = toJetfnError(error);
    if (failure.code !== "E_INPUT_INVALID") throw error;
    return errorPage(400, "bad request", failure.message);
  }
}

function param(url: URL, name: string): string | undefined {
  const value = url.searchParams.get(name)?.trim();
  return value ? value : undefined;
}

function parseRow(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Where the sign-in redirect goes: this page without the token, never another host ("//host"). */
function localPath(url: URL): string {
  return url.pathname.startsWith("//") ? "/" : `${url.pathname}${url.search}`;
}

function send(response: ServerResponse, reply: Reply): void {
  if (reply.location) response.setHeader("location", reply.location);
  if (reply.cookie) response.setHeader("set-cookie", reply.cookie);
  response.writeHead(reply.status ?? 200, {
    ...SECURITY_HEADERS,
    "content-type": `${reply.type ?? "text/html"}; charset=utf-8`,
  });
  response.end(reply.body ?? "");
}
