import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { JetfnError } from "../support/errors";

/** What a route answers: a status, a content type and a body. */
export interface RouteAnswer {
  status: number;
  contentType: string;
  body: string;
}

/** Answers `GET <path>`; a rejection is logged and answered with 500. */
export type Route = () => Promise<RouteAnswer>;

/** Where the operations endpoint listens and what it serves. */
export interface OpsServerOptions {
  host: string;
  port: number;
  /** Routes by path (`/metrics`, `/livez`, `/readyz`); any other path is answered with 404. */
  routes: Readonly<Record<string, Route>>;
  logger: Logger;
}

/** A running operations endpoint. */
export interface OpsServer {
  /** The port it listens on (the one asked for, or the one the system chose for 0). */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts the operations endpoint: a plain HTTP server for scrapers and probes, with a fixed set of
 * read-only routes and nothing else (no request body is read, no query string is interpreted).
 */
export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const paths = Object.keys(options.routes).join(", ");
  const server = createServer((request, response) => {
    const path = pathOf(request.url);
    const route = Object.hasOwn(options.routes, path) ? options.routes[path] : undefined;
    if (request.method !== "GET" || route === undefined) {
      response.writeHead(404, { "content-type": "text/plain" }).end(`not found; served: ${paths}\n`);
      return;
    }
    route().then(
      (answer) => response.writeHead(answer.status, { "content-type": answer.contentType }).end(answer.body),
      (error: unknown) => {
        options.logger.warn({ err: error, path }, "Answering an operations request failed.");
        response.writeHead(500, { "content-type": "text/plain" }).end("failed\n");
      },
    );
  });
  await listen(server, options.host, options.port);
  const port = (server.address() as AddressInfo).port;
  options.logger.info({ url: `http://${urlHost(options.host)}:${port}`, paths }, "Serving metrics and health checks.");
  return {
    port,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function pathOf(url: string | undefined): string {
  return (url ?? "/").split("?")[0] as string;
}

/** An IPv6 address goes in brackets in a URL. */
function urlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void =>
      reject(
        new JetfnError("E_CONFIG_INVALID", `metrics port ${port} on ${host}: ${error.message}`, {
          cause: error,
        }),
      );
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
}
