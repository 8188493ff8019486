import { JetStreamApiError, jserrors } from "@nats-io/jetstream/internal";
import { errors } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { withReplicaHint } from "../../runtime/nats/stream-replicas";
import {
  ANSWER_BACKOFF_MS,
  DEFAULT_ANSWER_WAIT_MS,
  DEFAULT_PLACEMENT_WAIT_MS,
  isUnanswered,
  untilAnswered,
} from "../../runtime/nats/until-answered";
import type { JetfnError } from "../../runtime/support/errors";
import { captureLogs } from "../helpers/logs";

/** What nats.js rejects a JetStream request with when the server did not answer within its 5 s. */
const REQUEST_TIMEOUT_MS = 5_000;

/** A request that NATS leaves unanswered `unanswered` times (each after the 5 s timeout), then answers. */
function slowServer(unanswered: number): { request: () => Promise<string>; askedAt: number[] } {
  const askedAt: number[] = [];
  const request = async (): Promise<string> => {
    askedAt.push(Date.now());
    if (askedAt.length > unanswered) return "answer";
    await new Promise((resolve) => setTimeout(resolve, REQUEST_TIMEOUT_MS));
    throw new errors.TimeoutError();
  };
  return { request, askedAt };
}

/** Runs `run` to its end under fake timers: its outcome, never an unhandled rejection. */
async function settle<T>(run: Promise<T>): Promise<{ value?: T; error?: JetfnError }> {
  const outcome = run.then(
    (value) => ({ value }),
    (error: unknown) => ({ error: error as JetfnError }),
  );
  await vi.runAllTimersAsync();
  return outcome;
}

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("untilAnswered", () => {
  it("asks again a request NATS did not answer in time, warning each time with what was asked", async () => {
    const logs = captureLogs();
    const server = slowServer(2);
    const outcome = await settle(untilAnswered("the stream JETFN_JOBS", server.request, { logger: logs.logger }));
    expect(outcome).toEqual({ value: "answer" });
    expect(server.askedAt).toEqual([0, 5_250, 10_750]);
    const warnings = logs.lines.filter((line) => line.level === 40);
    expect(warnings).toMatchObject([
      { request: "the stream JETFN_JOBS", tries: 1, elapsedMs: 5_000, retryInMs: 250, err: { type: "TimeoutError" } },
      { request: "the stream JETFN_JOBS", tries: 2, elapsedMs: 10_250, retryInMs: 500 },
    ]);
  });

  it("backs off 250 ms, 500 ms, 1 s, then 2 s between tries", async () => {
    const askedAt: number[] = [];
    const request = async (): Promise<never> => {
      askedAt.push(Date.now());
      throw new errors.TimeoutError();
    };
    const outcome = await settle(untilAnswered("x", request, { logger: captureLogs().logger, totalMs: 6_000 }));
    expect(outcome.error?.code).toBe("E_UNAVAILABLE");
    const gaps = askedAt.slice(1).map((at, index) => at - (askedAt[index] as number));
    expect(gaps).toEqual([250, 500, 1_000, 2_000, 2_000]);
    expect(ANSWER_BACKOFF_MS).toEqual([250, 500, 1_000, 2_000]);
  });

  it("gives up once the next try would start past the total time, with E_UNAVAILABLE naming the request", async () => {
    const logs = captureLogs();
    const server = slowServer(Number.POSITIVE_INFINITY);
    const outcome = await settle(untilAnswered("the bucket JETFN_CANCELS", server.request, { logger: logs.logger }));
    // Tries at 0, 5.25, 10.75, 16.75 and 23.75 s, each unanswered for 5 s; a sixth would start at 30.75 s.
    expect(server.askedAt).toEqual([0, 5_250, 10_750, 16_750, 23_750]);
    expect(DEFAULT_ANSWER_WAIT_MS).toBe(30_000);
    expect(outcome.error).toMatchObject({
      name: "JetfnError",
      code: "E_UNAVAILABLE",
      message: "NATS did not answer in time when asked for the bucket JETFN_CANCELS (5 tries over 28.8 s)",
    });
    expect(outcome.error?.cause).toMatchObject({ name: "TimeoutError" });
    expect(logs.lines.filter((line) => line.level === 40)).toHaveLength(4);
  });

  it.each([
    ["JetStream not enabled (no responders on $JS.API)", new jserrors.JetStreamNotEnabled("jetstream is not enabled")],
    ["no responders", new errors.RequestError("no responders", { cause: new errors.NoRespondersError("x") })],
    [
      "a refusal (permissions)",
      new JetStreamApiError({ code: 403, err_code: 10_003, description: "permissions violation" }),
    ],
    [
      "a refusal (bad config)",
      new JetStreamApiError({ code: 400, err_code: 10_058, description: "stream name already in use" }),
    ],
    ["a closed connection", new errors.ClosedConnectionError()],
    ["a draining connection", new errors.DrainingConnectionError()],
    ["any other error", new Error("boom")],
  ])("fails at once on %s", async (_, failure) => {
    const logs = captureLogs();
    let tries = 0;
    const request = async (): Promise<never> => {
      tries++;
      throw failure;
    };
    const outcome = await settle(untilAnswered("x", request, { logger: logs.logger }));
    expect(outcome.error).toBe(failure);
    expect(tries).toBe(1);
    expect(isUnanswered(failure)).toBe(false);
    expect(logs.lines).toEqual([]);
  });

  it("asks again when a cluster without a meta leader answers JetStream is temporarily unavailable", async () => {
    const unavailable = new JetStreamApiError({
      code: 503,
      err_code: 10_008,
      description: "JetStream system temporarily unavailable",
    });
    let tries = 0;
    const request = async (): Promise<string> => {
      tries++;
      if (tries < 3) throw unavailable;
      return "answer";
    };
    const outcome = await settle(
      untilAnswered("the JetStream account info", request, { logger: captureLogs().logger }),
    );
    expect(outcome).toEqual({ value: "answer" });
    expect(tries).toBe(3);
    expect(isUnanswered(unavailable)).toBe(true);
  });

  it("stops asking once its signal aborts (the runtime is stopping)", async () => {
    const stopping = new AbortController();
    const server = slowServer(Number.POSITIVE_INFINITY);
    const run = untilAnswered("x", server.request, { logger: captureLogs().logger, signal: stopping.signal });
    const outcome = run.then(
      () => undefined,
      (error: JetfnError) => error,
    );
    await vi.advanceTimersByTimeAsync(REQUEST_TIMEOUT_MS + 100); // Waiting its first back-off.
    stopping.abort();
    expect(await outcome).toMatchObject({ code: "E_UNAVAILABLE" });
    expect(server.askedAt).toEqual([0]);
  });

  describe("a cluster's refusal of the replicas asked for", () => {
    const R3 = { replicas: 3, placementTags: [] };
    /** How a cluster with a meta leader but fewer than 3 JetStream peers refuses a stream of 3 replicas. */
    const noPeers = new JetStreamApiError({
      code: 500,
      err_code: 10_005,
      description: "no suitable peers for placement",
    });
    /** A request through withReplicaHint that the cluster refuses `refusals` times, then does. */
    function formingCluster(refusals: number): { request: () => Promise<string>; askedAt: number[] } {
      const askedAt: number[] = [];
      const request = (): Promise<string> =>
        withReplicaHint(R3, async () => {
          askedAt.push(Date.now());
          if (askedAt.length > refusals) return "created";
          throw noPeers;
        });
      return { request, askedAt };
    }

    it("is asked again until the cluster places them, a warning per try naming the setting and the server's words", async () => {
      const logs = captureLogs();
      const cluster = formingCluster(3);
      const outcome = await settle(untilAnswered("the stream JETFN_JOBS", cluster.request, { logger: logs.logger }));
      expect(outcome).toEqual({ value: "created" });
      expect(cluster.askedAt).toEqual([0, 250, 750, 1_750]);
      expect(logs.lines.filter((line) => line.level === 40)).toMatchObject([
        { setting: "JETFN_REPLICAS", replicas: 3, serverSaid: "no suitable peers for placement", tries: 1 },
        { tries: 2, retryInMs: 500, waitsUpToMs: DEFAULT_PLACEMENT_WAIT_MS },
        { tries: 3, retryInMs: 1_000 },
      ]);
    });

    it("fails with E_CONFIG_INVALID naming JETFN_REPLICAS once the cluster refused them for the placement wait", async () => {
      const cluster = formingCluster(Number.POSITIVE_INFINITY);
      const outcome = await settle(untilAnswered("x", cluster.request, { logger: captureLogs().logger }));
      expect(DEFAULT_PLACEMENT_WAIT_MS).toBe(60_000);
      // Tries at 0, 0.25, 0.75, 1.75 s, then every 2 s; one more would start at 61.75 s.
      expect(cluster.askedAt.at(-1)).toBe(59_750);
      expect(outcome.error).toMatchObject({
        code: "E_CONFIG_INVALID",
        message:
          "JETFN_REPLICAS=3 needs a NATS cluster with JetStream on at least 3 servers; the server said: no suitable peers for placement",
      });
      expect(outcome.error?.cause).toBe(noPeers);
    });

    it("fails at once when the server is not in a cluster at all", async () => {
      const logs = captureLogs();
      const single = new JetStreamApiError({
        code: 500,
        err_code: 10_074,
        description: "replicas > 1 not supported in non-clustered mode",
      });
      let tries = 0;
      const request = (): Promise<never> =>
        withReplicaHint(R3, async () => {
          tries++;
          throw single;
        });
      const outcome = await settle(untilAnswered("x", request, { logger: logs.logger }));
      expect(outcome.error).toMatchObject({
        code: "E_CONFIG_INVALID",
        message: expect.stringContaining("JETFN_REPLICAS=3"),
      });
      expect(tries).toBe(1);
      expect(logs.lines).toEqual([]);
    });

    it("is thrown as the server said it when only one replica is asked for, anywhere", async () => {
      let tries = 0;
      const request = (): Promise<never> =>
        withReplicaHint({ replicas: 1, placementTags: [] }, async () => {
          tries++;
          throw noPeers;
        });
      const outcome = await settle(untilAnswered("x", request, { logger: captureLogs().logger }));
      expect(outcome.error).toBe(noPeers);
      expect(tries).toBe(1);
    });
  });
});
