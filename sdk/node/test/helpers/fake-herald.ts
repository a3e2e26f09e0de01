/** An in-process stand-in for the gateway's gRPC API, answering each call as a test scripts it. */
import * as grpc from "@grpc/grpc-js";
import { afterEach } from "vitest";
import { HeraldServer, type HeraldServerOptions } from "../../src/index.js";
import { heraldService } from "../../src/proto.js";

export interface Call {
  method: string;
  request: Record<string, unknown>;
  authorization: string | undefined;
}

/** Answers a call: a response, a gRPC error to send, or `"hang"` to never answer. */
export type Answer = { response: object } | { error: grpc.status; details?: string } | "hang";

export interface FakeHerald {
  calls: Call[];
  /** A client of the fake with quick retries, closed after the test. */
  client(options?: Partial<HeraldServerOptions>): HeraldServer;
}

const servers: { server: grpc.Server; clients: HeraldServer[] }[] = [];
afterEach(() => {
  for (const { server, clients } of servers.splice(0)) {
    for (const client of clients) client.close();
    server.forceShutdown();
  }
});

/** Starts a fake whose `answer(call, attempt)` decides each reply (attempt counts calls of that method, from 0). */
export async function fakeHerald(
  answer: (call: Call, attempt: number) => Answer,
): Promise<FakeHerald> {
  const calls: Call[] = [];
  const server = new grpc.Server();
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [method] of Object.entries(heraldService())) {
    handlers[method] = ((call, callback) => {
      const recorded: Call = {
        method,
        request: call.request as Record<string, unknown>,
        authorization: call.metadata.get("authorization")[0]?.toString(),
      };
      const attempt = calls.filter((c) => c.method === method).length;
      calls.push(recorded);
      const reply = answer(recorded, attempt);
      if (reply === "hang") return;
      if ("error" in reply) callback({ code: reply.error, details: reply.details ?? "fake" });
      else callback(null, reply.response);
    }) as grpc.handleUnaryCall<unknown, unknown>;
  }
  server.addService(heraldService(), handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
  const entry = { server, clients: [] as HeraldServer[] };
  servers.push(entry);
  return {
    calls,
    client: (options = {}) => {
      const client = new HeraldServer({
        address: `127.0.0.1:${port}`,
        apiKey: "unit-key",
        retries: { retries: 3, initialDelayMs: 1, maxDelayMs: 5 },
        ...options,
      });
      entry.clients.push(client);
      return client;
    },
  };
}
