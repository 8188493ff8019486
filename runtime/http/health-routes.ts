import type { Readiness } from "./readiness";
import type { Route } from "./server";

/**
 * `GET /livez`: 200 while the process answers HTTP at all (its event loop turns). A supervisor
 * restarts the runtime when it stops answering; it says nothing about NATS or Postgres, so an
 * outage of theirs does not restart every runtime at once.
 */
export const livenessRoute: Route = async () => ({ status: 200, contentType: "text/plain", body: "ok\n" });

/**
 * `GET /readyz`: 200 when ready for work, else 503 (a check failed, or the runtime is shutting down),
 * with each check's verdict as JSON.
 */
export function readinessRoute(check: () => Promise<Readiness>): Route {
  return async () => {
    const readiness = await check();
    return {
      status: readiness.ready ? 200 : 503,
      contentType: "application/json",
      body: `${JSON.stringify({ status: readiness.ready ? "ready" : "not ready", checks: readiness.checks })}\n`,
    };
  };
}
