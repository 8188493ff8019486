import type { Registry } from "prom-client";
import type { Route } from "./server";

/** `GET /metrics`: the registry in Prometheus's text format. */
export function metricsRoute(registry: Registry): Route {
  return async () => ({ status: 200, contentType: registry.contentType, body: await registry.metrics() });
}
