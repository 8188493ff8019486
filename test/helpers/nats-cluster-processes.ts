import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { natsServerBinary } from "../../runtime/nats/local-server";
import { freePort } from "../../runtime/support/free-port";
import { stopChild } from "../../runtime/support/stop-child";

/** The checked-in node configs the cluster runs (docs/production.md, "A cluster on one machine"). */
const CLUSTER_CONFIG_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../deploy/nats-cluster");
const NODE_NAMES = ["n1", "n2", "n3"] as const;

// Starts the checked-in 3-node cluster for the tests (through nats-cluster.ts, which stops it when
// the test ends) and for the benchmark (bench/cluster-scale.ts), so nothing here may need vitest.

/** One nats-server of a loopback cluster. */
export interface NatsClusterNode {
  /** `server_name` of its config (n1, n2, n3): what stream info names as leader and replicas. */
  readonly name: string;
  readonly url: string;
  readonly port: number;
  /** Its monitoring port (`/connz`, `/jsz`, ...). */
  readonly monitorPort: number;
  /** Its process id while it runs. */
  readonly pid: number | undefined;
  readonly running: boolean;
}

/** Three nats-servers with JetStream routed to each other on loopback, each with its own store. */
export interface NatsCluster {
  readonly nodes: readonly NatsClusterNode[];
  /** Every node's client URL, comma-separated (what NATS_URL takes). */
  readonly url: string;
  /** Sends `signal` to one node's own pid and waits for it to exit (its store stays). */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a stopped node again on its ports and store; resolves once it answers. */
  start(name: string): Promise<void>;
  /** The node leading `stream`, from the stream's info. */
  leaderOf(stream: string): Promise<string>;
  stop(): Promise<void>;
}

/** Options of a loopback cluster. */
export interface NatsClusterOptions {
  /**
   * Whether the nodes tell clients the other nodes' URLs (nats-server's default). Off, a client can
   * reach only the URLs it was given: a test that puts a proxy in front of the nodes needs that.
   * @default true
   */
  advertise?: boolean;
  /**
   * The nodes started at once; the others wait for `start(name)`, as when servers and runtimes start
   * together. Unless all start, no meta leader is waited for (one node alone has none).
   * @default every node
   */
  startedNodes?: readonly string[];
}

interface NodeProcess {
  name: string;
  port: number;
  monitorPort: number;
  args: string[];
  child: ChildProcess | undefined;
}

/**
 * Starts deploy/nats-cluster/n1.conf..n3.conf on free ports (flags win over the files' ports and
 * routes; the store lands in a temporary directory, the servers' working directory) and waits until
 * the JetStream meta leader is elected with all three peers current. The caller stops it (`stop()`
 * sends each node's own pid SIGTERM, then removes the stores); should this process exit first, the
 * nodes are sent SIGTERM too.
 */
export async function startNatsClusterProcesses(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  // A port found free can be taken by another test's process before nats-server binds it; then a
  // node exits at start. Start again on other ports, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      if (attempt === 3 || !/exited with code/.test((error as Error).message)) throw error;
    }
  }
}

async function startOnce(options: NatsClusterOptions): Promise<NatsCluster> {
  const storeDir = await mkdtemp(path.join(tmpdir(), "jetfn-nats-cluster-"));
  const nodes = await planNodes(options);
  const cluster = new Cluster(nodes, storeDir);
  try {
    const started = nodes.filter((node) => options.startedNodes?.includes(node.name) ?? true);
    await Promise.all(started.map((node) => cluster.start(node.name)));
    if (started.length === nodes.length) await waitForMetaLeader(nodes);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Nine distinct free ports (client, route, monitor per node), found one after another. */
async function distinctPorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

async function planNodes(options: NatsClusterOptions): Promise<NodeProcess[]> {
  const free = await distinctPorts(NODE_NAMES.length * 3);
  const ports = NODE_NAMES.map((_, index) => free.slice(index * 3, index * 3 + 3));
  const routeUrls = ports.map(([, route]) => `nats-route://127.0.0.1:${route}`);
  return NODE_NAMES.map((name, index) => {
    const [port, route, monitor] = ports[index] as number[];
    return {
      name,
      port: port as number,
      monitorPort: monitor as number,
      child: undefined,
      args: [
        ["-c", path.join(CLUSTER_CONFIG_DIR, `${name}.conf`)],
        ["-a", "127.0.0.1", "-p", String(port)],
        ["--cluster", `nats://127.0.0.1:${route}`],
        ["--routes", routeUrls.filter((_, other) => other !== index).join(",")],
        ["-m", String(monitor)],
        options.advertise === false ? ["--no_advertise=true"] : [],
      ].flat(),
    };
  });
}

class Cluster implements NatsCluster {
  readonly #processes: NodeProcess[];
  readonly #storeDir: string;

  constructor(processes: NodeProcess[], storeDir: string) {
    this.#processes = processes;
    this.#storeDir = storeDir;
  }

  get nodes(): NatsClusterNode[] {
    return this.#processes.map((node) => ({
      name: node.name,
      url: `nats://127.0.0.1:${node.port}`,
      port: node.port,
      monitorPort: node.monitorPort,
      pid: node.child?.pid,
      running: isRunning(node.child),
    }));
  }

  get url(): string {
    return this.nodes.map((node) => node.url).join(",");
  }

  async kill(name: string, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const node = this.#node(name);
    const child = node.child;
    if (!child || !isRunning(child)) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  async start(name: string): Promise<void> {
    const node = this.#node(name);
    if (isRunning(node.child)) return;
    // The config's relative store_dir (.jetfn/nats-cluster/<name>) resolves under the temporary directory.
    node.child = spawn(natsServerBinary(), node.args, { cwd: this.#storeDir, stdio: "ignore" });
    stopOnExit(node.child);
    await waitForAnswer(node);
  }

  async leaderOf(stream: string): Promise<string> {
    const nc = await connect({ servers: this.nodes.filter((node) => node.running).map((node) => node.url) });
    try {
      const info = await (await jetstreamManager(nc)).streams.info(stream);
      return info.cluster?.leader ?? "";
    } finally {
      await nc.close();
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.#processes.map((node) => (node.child ? stopChild(node.child) : undefined)));
    await rm(this.#storeDir, { recursive: true, force: true });
  }

  #node(name: string): NodeProcess {
    const node = this.#processes.find((candidate) => candidate.name === name);
    if (!node) throw new Error(`no cluster node named ${name}`);
    return node;
  }
}

/** If this process exits (even of an uncaught error) with the node running, the node gets SIGTERM instead of lingering. */
function stopOnExit(child: ChildProcess): void {
  const kill = (): void => {
    if (isRunning(child)) child.kill("SIGTERM");
  };
  process.once("exit", kill);
  child.once("exit", () => process.off("exit", kill));
}

function isRunning(child: ChildProcess | undefined): boolean {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

async function waitForAnswer(node: NodeProcess): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (!isRunning(node.child)) throw new Error(`nats-server ${node.name} exited with code ${node.child?.exitCode}`);
    try {
      const probe = await connect({ servers: `127.0.0.1:${node.port}`, reconnect: false, timeout: 500 });
      await probe.close();
      return;
    } catch {
      await sleep(50);
    }
  }
  node.child?.kill("SIGKILL");
  throw new Error(`nats-server ${node.name} did not answer on port ${node.port}`);
}

/** The meta group as a node's monitoring port reports it (`/jsz`). */
interface MetaCluster {
  leader?: string;
  cluster_size?: number;
  replicas?: { name: string; current: boolean }[];
}

/**
 * Waits until every node sees a JetStream meta leader and the leader sees the two others current:
 * before that, creating a stream with 3 replicas can fail for want of peers.
 */
async function waitForMetaLeader(nodes: NodeProcess[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  let last = "";
  while (Date.now() < deadline) {
    const metas = await Promise.all(nodes.map((node) => readMeta(node).catch(() => undefined)));
    last = JSON.stringify(metas);
    const leader = metas[0]?.leader;
    const agreed = leader && metas.every((meta) => meta?.leader === leader);
    const leaderMeta = metas[nodes.findIndex((node) => node.name === leader)];
    const current = leaderMeta?.replicas?.filter((replica) => replica.current).length ?? 0;
    if (agreed && current >= nodes.length - 1) return;
    await sleep(200);
  }
  throw new Error(`the cluster elected no JetStream meta leader with all peers current within 60s: ${last}`);
}

async function readMeta(node: NodeProcess): Promise<MetaCluster | undefined> {
  const response = await fetch(`http://127.0.0.1:${node.monitorPort}/jsz`);
  const body = (await response.json()) as { meta_cluster?: MetaCluster };
  return body.meta_cluster;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
