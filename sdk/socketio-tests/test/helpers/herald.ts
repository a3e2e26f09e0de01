/**
 * Herald as a target: the real binary (HERALD_BIN, else target/debug/herald) started with
 * HERALD_BACKEND_ADDR pointing at the suite's backend, served here over gRPC as
 * `herald.v1.Backend`; publishes, disconnects and server-side subscriptions go through
 * Herald's gRPC API, as an app's services call it.
 */
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
} from "../../../typescript/test/helpers/gateway.js";
import { createBackend, type Backend } from "./backend.js";
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
  const backend = createBackend();
  const served = await serveBackend(backend);
  const gateway = await startGateway({
    env: {
      HERALD_BACKEND_ADDR: served.address,
      HERALD_PING_INTERVAL_SECONDS: String(HEARTBEAT.intervalSeconds),
      HERALD_PONG_TIMEOUT_SECONDS: String(HEARTBEAT.timeoutSeconds),
      ...env,
    },
  }).catch((error: unknown) => {
    // A live gRPC server would keep the test process from exiting.
    served.server.forceShutdown();
    throw error;
  });
  const api = grpc.loadPackageDefinition(
    protoLoader.loadSync(API_PROTO, loadOptions),
  ) as unknown as {
    herald: { v1: { Herald: new (address: string, creds: grpc.ChannelCredentials) => HeraldStub } };
  };
  const stub = new api.herald.v1.Herald(gateway.grpcAddr, grpc.credentials.createInsecure());
  const stop = async () => {
    stub.close();
    served.server.forceShutdown();
    await gateway.stop();
  };
  if (!(await speaksSocketIo(gateway.httpUrl))) {
    await stop();
    return { unavailable: `${HERALD_BIN} has no Socket.IO endpoint at /socket.io/` };
  }
  const call = <Req>(method: Unary<Req>, request: Req) =>
    new Promise<unknown>((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${gateway.apiKey}`);
      method.call(stub, request, metadata, { deadline: Date.now() + 10_000 }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  return {
    url: gateway.httpUrl,
    secret: gateway.secret,
    backend,
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
    stop,
  };
}
