/** The gateway's gRPC API (publish, disconnect…) through @grpc/grpc-js, as a backend would call it. */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll } from "vitest";
import { API_PROTO, startGateway, type Gateway, type GatewayOptions } from "./gateway.js";

type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;
type Unary<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: Callback<Res>,
) => void;

interface HeraldStub extends grpc.Client {
  Publish: Unary<
    { channel: string; event: string; data: Buffer; idempotencyKey?: string },
    { offset: number; epoch: string }
  >;
  Disconnect: Unary<{ user: string; code: number; reason: string }, { connections: number }>;
  Info: Unary<Record<string, never>, { nodes: { id: string; connections: number }[] }>;
  Subscribe: Unary<{ user: string; channel: string; client?: string }, Record<string, never>>;
  Unsubscribe: Unary<{ user: string; channel: string; client?: string }, Record<string, never>>;
}

export interface Api {
  publish(
    channel: string,
    event: string,
    data: unknown,
  ): Promise<{ offset: number; epoch: string }>;
  disconnect(user: string, code: number, reason?: string): Promise<number>;
  connections(): Promise<number>;
  /** A server-side subscription of every connection of `user` (or of connection `client`). */
  subscribe(user: string, channel: string, client?: string): Promise<void>;
  /** Ends a server-side subscription of `user` (or of connection `client`). */
  unsubscribe(user: string, channel: string, client?: string): Promise<void>;
  close(): void;
}

const definition = protoLoader.loadSync(API_PROTO, {
  longs: Number,
  defaults: true,
  keepCase: false,
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  herald: {
    v1: { Herald: new (address: string, credentials: grpc.ChannelCredentials) => HeraldStub };
  };
};

/** A gRPC client of the gateway at `address` with API key `apiKey`. */
export function connectApi(address: string, apiKey: string): Api {
  const stub = new loaded.herald.v1.Herald(address, grpc.credentials.createInsecure());
  const call = <Req, Res>(method: Unary<Req, Res>, request: Req): Promise<Res> =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${apiKey}`);
      method.call(stub, request, metadata, { deadline: Date.now() + 10_000 }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  return {
    publish: (channel, event, data) =>
      call(stub.Publish, { channel, event, data: Buffer.from(JSON.stringify(data)) }),
    disconnect: async (user, code, reason = "test") =>
      (await call(stub.Disconnect, { user, code, reason })).connections,
    connections: async () =>
      (await call(stub.Info, {})).nodes.reduce((sum, node) => sum + Number(node.connections), 0),
    subscribe: async (user, channel, client) => {
      await call(stub.Subscribe, { user, channel, client });
    },
    unsubscribe: async (user, channel, client) => {
      await call(stub.Unsubscribe, { user, channel, client });
    },
    close: () => stub.close(),
  };
}

/**
 * A gateway and a gRPC client of its API for one test file, both stopped after the file's
 * tests. `api` may be replaced (after a gateway restart); the current one is closed.
 */
export async function gatewayWithApi(
  options?: GatewayOptions,
): Promise<{ gateway: Gateway; api: Api }> {
  const gateway = await startGateway(options);
  const env = { gateway, api: connectApi(gateway.grpcAddr, gateway.apiKey) };
  afterAll(async () => {
    env.api.close();
    await gateway.stop();
  });
  return env;
}
