import type { Sql } from "postgres";
import { listAuditEntries } from "../audit/audit-queries";
import { gatherOverview } from "../inspect/function-overview";
import type { Runtime } from "../runtime";
import { type ChartRange, chartRangeOf } from "./chart-range";
import { readFunctionActivity } from "./function-activity";
import { layout, type SafeHtml } from "./html";
import { lastSegment, type Route } from "./route";
import { readSeries, SERIES_QUERY_TIMEOUT_MS } from "./series-query";
import { functionPage, nowPanel } from "./views/function-page";
import { functionsPage, functionsTable } from "./views/functions";
import { chartsSection, chartsUnavailable, seriesCharts } from "./views/series-charts";

// Postgres's code for a statement ended by statement_timeout.
const QUERY_CANCELED = "57014";
const AUDIT_ON_FUNCTION_PAGE = 10;

/** The functions list, one function's page, their live parts, and the charts' figures. */
export function functionRoutes(runtime: Runtime): Route[] {
  const { sql } = runtime.database;
  const overview = () =>
    gatherOverview(runtime.nats, { stream: runtime.config.streamName, maxWaitMs: 700, stallMs: 150 });
  const charts = async (url: URL, fn?: string): Promise<SafeHtml> => {
    const range = chartRangeOf(url);
    return chartsSection(await chartsContent(sql, range, fn), { range, fn });
  };
  return [
    {
      method: "GET",
      pattern: /^\/$/,
      handler: async (_request, url) => {
        const [data, section] = await Promise.all([overview(), charts(url)]);
        return {
          body: layout("functions", "functions", functionsPage(functionsTable(data.functions, data.runtimes), section)),
        };
      },
    },
    {
      method: "GET",
      pattern: /^\/fragments\/functions$/,
      handler: async () => {
        const data = await overview();
        return { body: functionsTable(data.functions, data.runtimes).value };
      },
    },
    {
      method: "GET",
      pattern: /^\/api\/functions$/,
      handler: async () => ({ type: "application/json", body: JSON.stringify(await overview()) }),
    },
    {
      method: "GET",
      pattern: /^\/functions\/[^/]+$/,
      handler: async (_request, url) => {
        const name = lastSegment(url);
        const [data, section, activity, audit] = await Promise.all([
          overview(),
          charts(url, name),
          readFunctionActivity(sql, name).catch((error: unknown) => {
            if (!isQueryTimeout(error)) throw error;
            return undefined;
          }),
          listAuditEntries(runtime.database.db, { function: name, limit: AUDIT_ON_FUNCTION_PAGE }),
        ]);
        const body = functionPage({
          name,
          overview: data.functions.find((fn) => fn.function === name),
          runtimes: data.runtimes,
          deployed: runtime.registry.get(name),
          functionsDir: runtime.config.functionsDir,
          activity,
          audit,
          charts: section,
        });
        return { body: layout(name, "functions", body) };
      },
    },
    {
      method: "GET",
      pattern: /^\/fragments\/functions\/[^/]+\/now$/,
      handler: async (_request, url) => {
        const name = lastSegment(url, 2);
        const data = await overview();
        return {
          body: nowPanel(
            data.functions.find((fn) => fn.function === name),
            data.runtimes,
          ).value,
        };
      },
    },
    {
      method: "GET",
      pattern: /^\/fragments\/charts$/,
      handler: async (_request, url) => {
        const fn = url.searchParams.get("function") ?? undefined;
        return { body: (await chartsContent(sql, chartRangeOf(url), fn)).value };
      },
    },
    {
      method: "GET",
      pattern: /^\/api\/series$/,
      handler: async (_request, url) => {
        const fn = url.searchParams.get("function") ?? undefined;
        return { type: "application/json", body: JSON.stringify(await readSeries(sql, chartRangeOf(url), fn)) };
      },
    },
  ];
}

/** The charts of one range, or a sentence saying their figures took too long to read. */
async function chartsContent(sql: Sql, range: ChartRange, fn: string | undefined): Promise<SafeHtml> {
  try {
    return seriesCharts(await readSeries(sql, range, fn));
  } catch (error) {
    if (!isQueryTimeout(error)) throw error;
    return chartsUnavailable(
      `The figures of the last ${range.label} took longer than ${SERIES_QUERY_TIMEOUT_MS / 1_000} s to read; choose a shorter range.`,
    );
  }
}

/** A dashboard read ended by its statement timeout (or a lock it waited on too long). */
function isQueryTimeout(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === QUERY_CANCELED;
}
