/**
 * The app's backend: a `herald.v1.Backend` gRPC service (proto/herald/v1/backend.proto) that
 * Herald calls with each client `rpc` (HERALD_BACKEND_ADDR). The handler gets the request with
 * its JSON parsed and returns the reply's data, or throws a BackendError to refuse.
 */
import * as grpc from "@grpc/grpc-js";
import { createHash, timingSafeEqual } from "node:crypto";
import { BackendError } from "./errors.js";
import { decodeJson, encodeJson } from "./json.js";
import { backendService } from "./proto.js";
import type { RpcRequest } from "./types.js";

/** What a handler knows about the call besides the request. */
export interface RpcContext {
  /** When Herald stops waiting (HERALD_BACKEND_TIMEOUT_MS); undefined without a deadline. */
  deadline: Date | undefined;
  /** Aborted when Herald gives up on the call (deadline passed, client gone): stop the work. */
  signal: AbortSignal;
  /** The call's gRPC metadata. */
  metadata: grpc.Metadata;
}

export interface BackendHandler {
  /**
   * Answers one client `rpc`: the returned value (JSON; `undefined` is `null`) is the
   * client's `result.data`. Throw a BackendError to refuse with your code (≥ 1000) and
   * message; any other exception reaches the client as error 112 (backend unavailable).
   */
  rpc(request: RpcRequest, context: RpcContext): unknown;
}

export interface BackendOptions {
  /** HERALD_BACKEND_TOKEN: calls without `authorization: Bearer <token>` are refused (UNAUTHENTICATED). */
  token?: string;
  /** Called with exceptions other than BackendError; default console.error. */
  onError?: (error: unknown, request: RpcRequest) => void;
}

export interface ServeBackendOptions extends BackendOptions {
  /** Where to listen, `host:port`; port 0 picks a free one (see `BackendServer.port`). */
  address: string;
  /** Default insecure (plain HTTP/2, HERALD_BACKEND_ADDR=http://…). */
  credentials?: grpc.ServerCredentials;
}

export interface BackendServer {
  /** The port it listens on. */
  readonly port: number;
  readonly server: grpc.Server;
  /** Stops accepting calls and resolves once the calls in flight are answered. */
  close(): Promise<void>;
}

interface RawRpcRequest {
  user: string;
  client: string;
  orgs: string[];
  info: Buffer;
  method: string;
  data: Buffer;
  node: string;
}

interface RawRpcResponse {
  data: Buffer;
  error: { code: number; message: string } | null;
}

/** Adds the `herald.v1.Backend` service to a gRPC server of your own. */
export function addBackendService(
  server: grpc.Server,
  handler: BackendHandler,
  options: BackendOptions = {},
): void {
  const authorized = options.token === undefined ? () => true : bearerCheck(options.token);
  const onError = options.onError ?? ((error) => console.error("herald backend rpc failed", error));
  const rpc: grpc.handleUnaryCall<RawRpcRequest, RawRpcResponse> = (call, callback) => {
    const presented = call.metadata.get("authorization")[0];
    if (!authorized(typeof presented === "string" ? presented : "")) {
      callback({ code: grpc.status.UNAUTHENTICATED, details: "invalid backend token" });
      return;
    }
    let request: RpcRequest;
    try {
      request = parseRequest(call.request);
    } catch {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: "data or info is not JSON" });
      return;
    }
    const controller = new AbortController();
    call.on("cancelled", () => controller.abort());
    const deadline = call.getDeadline();
    const context: RpcContext = {
      deadline: deadline === Infinity ? undefined : new Date(deadline),
      signal: controller.signal,
      metadata: call.metadata,
    };
    Promise.resolve()
      .then(() => handler.rpc(request, context))
      .then(
        (data) => callback(null, { data: encodeJson(data ?? null, "rpc's result"), error: null }),
        (error: unknown) => {
          if (error instanceof BackendError) {
            callback(null, {
              data: Buffer.alloc(0),
              error: { code: error.code, message: error.message },
            });
            return;
          }
          onError(error, request);
          callback({ code: grpc.status.INTERNAL, details: "backend handler failed" });
        },
      );
  };
  server.addService(backendService(), { Rpc: rpc });
}

/** Starts a gRPC server answering `herald.v1.Backend/Rpc` with `handler`. */
export async function serveBackend(
  handler: BackendHandler,
  options: ServeBackendOptions,
): Promise<BackendServer> {
  const server = new grpc.Server();
  addBackendService(server, handler, options);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      options.address,
      options.credentials ?? grpc.ServerCredentials.createInsecure(),
      (error, port) => (error ? reject(error) : resolve(port)),
    ),
  );
  return {
    port,
    server,
    close: () =>
      new Promise((resolve, reject) =>
        server.tryShutdown((error) => (error ? reject(error) : resolve())),
      ),
  };
}

function parseRequest(raw: RawRpcRequest): RpcRequest {
  return {
    user: raw.user,
    client: raw.client,
    orgs: raw.orgs,
    info: decodeJson(raw.info),
    method: raw.method,
    data: decodeJson(raw.data),
    node: raw.node,
  };
}

/** Compares the presented header with `Bearer <token>` in constant time (digests: equal lengths). */
function bearerCheck(token: string): (presented: string) => boolean {
  const digest = (value: string) => createHash("sha256").update(value).digest();
  const expected = digest(`Bearer ${token}`);
  return (presented) => timingSafeEqual(digest(presented), expected);
}
