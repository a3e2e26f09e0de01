/**
 * Herald as a target: the real binary (HERALD_BIN, else target/debug/herald) started with
 * HERALD_BACKEND_ADDR pointing at the suite's backend, served here over gRPC as
 * `herald.v1.Backend`; publishes, disconnects and server-side subscriptions go through
 * Herald's gRPC API, as an app's services call it. One node (standalone), or two nodes with
 * their own NATS and Redis behind a TCP proxy (`startHeraldCluster`).
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { io } from "socket.io-client";
import {
  API_PROTO,
  HERALD_BIN,
  REPO_ROOT,
  startGateway,
  type Gateway,
} from "../../../typescript/test/helpers/gateway.js";
import { createBackend, type Backend } from "./backend.js";
import {
  redisCommand,
  retryPortClash,
  startNats,
  startRedis,
  TcpProxy,
  type ServerProcess,
} from "./cluster.js";
import { HEARTBEAT, type Target } from "./target.js";
import { waitFor } from "./client.js";

/** `herald.v1.RpcRequest` / `RpcResponse` as proto-loader hands them over. */
interface RpcRequest {
  user: string;
  method: string;
  data: Buffer;
}
interface RpcResponse {
  data?: Buffer;
  error?: { code: number; message: string };
}

type Unary<Req> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response: unknown) => void,
) => void;

interface HeraldStub extends grpc.Client {
  Publish: Unary<{ channel: string; event: string; data: Buffer }>;
  Disconnect: Unary<{ user: string; code: number; reason: string }>;
  Subscribe: Unary<{ user: string; channel: string }>;
  Unsubscribe: Unary<{ user: string; channel: string }>;
}

const loadOptions = { longs: Number, defaults: true, keepCase: false };

/** Serves `backend` as `herald.v1.Backend` on a free loopback port. */
async function serveBackend(backend: Backend): Promise<{ address: string; server: grpc.Server }> {
  const definition = protoLoader.loadSync(
    join(REPO_ROOT, "proto/herald/v1/backend.proto"),
    loadOptions,
  );
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    herald: { v1: { Backend: { service: grpc.ServiceDefinition } } };
  };
  const server = new grpc.Server();
  server.addService(loaded.herald.v1.Backend.service, {
    Rpc: (
      call: grpc.ServerUnaryCall<RpcRequest, RpcResponse>,
      callback: grpc.sendUnaryData<RpcResponse>,
    ) => {
      const { user, method, data } = call.request;
      const reply = backend.rpc({
        user,
        method,
        data: data.length > 0 ? (JSON.parse(data.toString()) as unknown) : null,
      });
      callback(
        null,
        reply.error
          ? { error: reply.error }
          : { data: Buffer.from(JSON.stringify(reply.data ?? null)) },
      );
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return { address: `http://127.0.0.1:${port}`, server };
}

/** Whether `url` answers an Engine.IO handshake at /socket.io/ (the WebSocket transport). */
async function speaksSocketIo(url: string): Promise<boolean> {
  // The manager alone opens the Engine.IO session; no Socket.IO namespace is joined.
  const manager = io(url, { transports: ["websocket"], reconnection: false, forceNew: true }).io;
  try {
    return await waitFor<boolean>("the Engine.IO open or an error", (callback) => {
      const onOpen = () => callback(true);
      const onError = () => callback(false);
      manager.on("open", onOpen);
      manager.on("error", onError);
      return () => {
        manager.off("open", onOpen);
        manager.off("error", onError);
      };
    });
  } finally {
    manager.engine?.close();
  }
}

/** One node's gRPC API (`herald.v1.Herald`), as the app's services call it. */
export type NodeApi = Pick<Target, "publish" | "disconnect" | "subscribe" | "unsubscribe"> & {
  close(): void;
};

function connectApi(grpcAddr: string, apiKey: string): NodeApi {
  const api = grpc.loadPackageDefinition(
    protoLoader.loadSync(API_PROTO, loadOptions),
  ) as unknown as {
    herald: { v1: { Herald: new (address: string, creds: grpc.ChannelCredentials) => HeraldStub } };
  };
  const stub = new api.herald.v1.Herald(grpcAddr, grpc.credentials.createInsecure());
  const call = <Req>(method: Unary<Req>, request: Req) =>
    new Promise<unknown>((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${apiKey}`);
      method.call(stub, request, metadata, { deadline: Date.now() + 10_000 }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  return {
    publish: async (channel, event, data) => {
      await call(stub.Publish, { channel, event, data: Buffer.from(JSON.stringify(data)) });
    },
    disconnect: async (user, code) => {
      const reply = (await call(stub.Disconnect, { user, code, reason: "test" })) as {
        connections: number;
      };
      return reply.connections;
    },
    subscribe: async (user, channel) => {
      await call(stub.Subscribe, { user, channel });
    },
    unsubscribe: async (user, channel) => {
      await call(stub.Unsubscribe, { user, channel });
    },
    close: () => stub.close(),
  };
}

/** One running node: its HTTP port and gRPC API, and a crash and restart on the same ports. */
export interface HeraldNode extends NodeApi {
  readonly httpPort: number;
  /** Kills the process (SIGKILL: a crash, no drain). */
  kill(): Promise<void>;
  /** Starts it again on the same ports and keys (so its pids still verify); waits until ready. */
  start(): Promise<void>;
}

function heraldNode(gateway: Gateway, apiKey: string): HeraldNode {
  let api = connectApi(gateway.grpcAddr, apiKey);
  return {
    httpPort: Number(gateway.httpAddr.split(":").at(-1)),
    publish: (channel, event, data) => api.publish(channel, event, data),
    disconnect: (user, code) => api.disconnect(user, code),
    subscribe: (user, channel) => api.subscribe(user, channel),
    unsubscribe: (user, channel) => api.unsubscribe(user, channel),
    kill: () => gateway.kill(),
    start: async () => {
      await gateway.start();
      // A fresh gRPC channel: the old one backs off after the node went away.
      api.close();
      api = connectApi(gateway.grpcAddr, apiKey);
    },
    close: () => api.close(),
  };
}

/** Starts the backend's gRPC server, then `boot` with its address; stops it if `boot` fails. */
async function withBackend<T>(
  boot: (backend: Backend, address: string) => Promise<T>,
): Promise<{ backend: Backend; server: grpc.Server; booted: T }> {
  const backend = createBackend();
  const served = await serveBackend(backend);
  try {
    return { backend, server: served.server, booted: await boot(backend, served.address) };
  } catch (error) {
    // A live gRPC server would keep the test process from exiting.
    served.server.forceShutdown();
    throw error;
  }
}

/** The settings every node of the suite runs with, over `env`. */
const nodeEnv = (backendAddress: string, env: Record<string, string> = {}) => ({
  HERALD_BACKEND_ADDR: backendAddress,
  HERALD_PING_INTERVAL_SECONDS: String(HEARTBEAT.intervalSeconds),
  HERALD_PONG_TIMEOUT_SECONDS: String(HEARTBEAT.timeoutSeconds),
  ...env,
});

/**
 * Starts Herald (with `env` over the suite's settings) and its backend; answers why not
 * instead when there is no binary or the binary has no Socket.IO endpoint (the suite is then
 * skipped with that reason).
 */
export async function startHerald(
  env: Record<string, string> = {},
): Promise<Target | { unavailable: string }> {
  if (!existsSync(HERALD_BIN)) {
    return { unavailable: `no herald binary at ${HERALD_BIN} (set HERALD_BIN)` };
  }
  const {
    backend,
    server,
    booted: gateway,
  } = await withBackend((_, address) =>
    retryPortClash(() => startGateway({ env: nodeEnv(address, env) })),
  );
  const node = heraldNode(gateway, gateway.apiKey);
  const stop = async () => {
    node.close();
    server.forceShutdown();
    await gateway.stop();
  };
  if (!(await speaksSocketIo(gateway.httpUrl))) {
    await stop();
    return { unavailable: `${HERALD_BIN} has no Socket.IO endpoint at /socket.io/` };
  }
  return {
    url: gateway.httpUrl,
    secret: gateway.secret,
    backend,
    publish: (channel, event, data) => node.publish(channel, event, data),
    disconnect: (user, code) => node.disconnect(user, code),
    subscribe: (user, channel) => node.subscribe(user, channel),
    unsubscribe: (user, channel) => node.unsubscribe(user, channel),
    loseState: async () => {
      // A standalone node keeps history in memory: a restart starts every channel over in a
      // new epoch.
      await node.kill();
      await node.start();
    },
    stop,
  };
}

/**
 * Two Herald nodes on one NATS and one Redis, the client reaching them through a proxy.
 * As a `Target`: the client connects through the proxy (to node 0 unless `route` moved it);
 * publishes and server-side subscriptions go through node 1, so every delivery crosses NATS;
 * `disconnect` asks the node the proxy sends clients to (gRPC Disconnect closes the user's
 * connections on every node; its count is that node's); `loseState` flushes Redis.
 */
export interface ClusterTarget extends Target {
  readonly nodes: readonly [HeraldNode, HeraldNode];
  /** Sends new client connections to `node` (and cuts the ones the proxy carries). */
  route(node: 0 | 1): void;
}

/** Starts the cluster (NATS, Redis, two nodes, the proxy), or answers why it cannot. */
export async function startHeraldCluster(): Promise<ClusterTarget | { unavailable: string }> {
  if (!existsSync(HERALD_BIN)) {
    return { unavailable: `no herald binary at ${HERALD_BIN} (set HERALD_BIN)` };
  }
  const stops: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const step of stops.splice(0).reverse()) await step();
  };
  try {
    const servers: ServerProcess[] = [
      await retryPortClash(startNats),
      await retryPortClash(startRedis),
    ];
    stops.push(...servers.map((server) => () => server.stop()));
    const [nats, redis] = servers as [ServerProcess, ServerProcess];
    // The same keys on both nodes: either verifies the other's tokens and pids.
    const shared = {
      HERALD_JWT_SECRET: randomBytes(24).toString("hex"),
      HERALD_API_KEYS: `sio-cluster-${randomBytes(12).toString("hex")}`,
      HERALD_NATS_URL: nats.url,
      HERALD_REDIS_URL: redis.url,
    };
    const { backend, server, booted } = await withBackend(async (_, address) => {
      const started: Gateway[] = [];
      try {
        for (const id of ["a", "b"]) {
          started.push(
            await retryPortClash(() =>
              startGateway({ env: nodeEnv(address, { ...shared, HERALD_NODE_ID: id }) }),
            ),
          );
        }
      } catch (error) {
        for (const gateway of started) await gateway.stop();
        throw error;
      }
      return started as [Gateway, Gateway];
    });
    stops.push(() => server.forceShutdown());
    stops.push(...booted.map((gateway) => () => gateway.stop()));
    const nodes = booted.map((gateway) => heraldNode(gateway, shared.HERALD_API_KEYS)) as [
      HeraldNode,
      HeraldNode,
    ];
    stops.push(...nodes.map((node) => () => node.close()));
    const proxy = await TcpProxy.start(nodes[0].httpPort);
    stops.push(() => proxy.stop());
    const url = `http://127.0.0.1:${proxy.port}`;
    if (!(await speaksSocketIo(url))) {
      throw new Error(`${HERALD_BIN} has no Socket.IO endpoint at /socket.io/`);
    }
    const [, far] = nodes;
    let routed: 0 | 1 = 0;
    return {
      url,
      secret: shared.HERALD_JWT_SECRET,
      backend,
      nodes,
      route: (node) => {
        routed = node;
        proxy.pointAt(nodes[node].httpPort);
      },
      publish: (channel, event, data) => far.publish(channel, event, data),
      disconnect: (user, code) => nodes[routed].disconnect(user, code),
      subscribe: (user, channel) => far.subscribe(user, channel),
      unsubscribe: (user, channel) => far.unsubscribe(user, channel),
      loseState: async () => {
        const reply = await redisCommand(redis.port, "FLUSHALL");
        if (reply !== "+OK") throw new Error(`FLUSHALL answered ${reply}`);
      },
      stop,
    };
  } catch (error) {
    await stop();
    if (error instanceof Error && error.message.includes("no Socket.IO endpoint")) {
      return { unavailable: error.message };
    }
    if (error instanceof Error && error.message.includes("ENOENT")) {
      return {
        unavailable: `${error.message}: apt-get install nats-server redis-server (scripts/test does)`,
      };
    }
    throw error;
  }
}
