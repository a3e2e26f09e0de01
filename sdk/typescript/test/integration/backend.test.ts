/**
 * The app's backend in the loop, against the real binary: a small `herald.v1.Backend` served
 * here with @grpc/grpc-js (the gateway's HERALD_BACKEND_ADDR points at it) for `rpc`, and
 * server-side subscriptions made over the gateway's gRPC API (`Subscribe` / `Unsubscribe`).
 */
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import WebSocket from "ws";
import { afterAll, describe, expect, it } from "vitest";
import {
  HeraldError,
  type SubscribedInfo,
  type UnsubscribedInfo,
  type WebSocketConstructor,
} from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { REPO_ROOT } from "../helpers/gateway.js";
import { gatewayWithApi, type Api } from "../helpers/grpc.js";
import { waitFor } from "../helpers/wait.js";

/** `herald.v1.RpcRequest` as proto-loader hands it over. */
interface RpcRequest {
  user: string;
  client: string;
  orgs: string[];
  info: Buffer;
  method: string;
  data: Buffer;
  node: string;
}

/** `herald.v1.RpcResponse`. */
interface RpcResponse {
  data?: Buffer;
  error?: { code: number; message: string };
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

/**
 * The app's backend: `echo` returns what it was called with; `message:send` publishes the
 * text over the gateway's gRPC API (client → backend → Publish → everyone) and returns the
 * offset; `fail` refuses with the app's own code.
 */
async function startBackend(): Promise<{ address: string; calls: RpcRequest[]; api?: Api }> {
  const definition = protoLoader.loadSync(join(REPO_ROOT, "proto/herald/v1/backend.proto"), {
    longs: Number,
    defaults: true,
    keepCase: false,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    herald: { v1: { Backend: { service: grpc.ServiceDefinition } } };
  };
  const backend: { address: string; calls: RpcRequest[]; api?: Api } = { address: "", calls: [] };
  const rpc = async (request: RpcRequest): Promise<RpcResponse> => {
    backend.calls.push(request);
    const data: unknown = request.data.length > 0 ? JSON.parse(request.data.toString()) : null;
    switch (request.method) {
      case "echo":
        return {
          data: json({
            user: request.user,
            client: request.client,
            orgs: request.orgs,
            info: request.info.length > 0 ? JSON.parse(request.info.toString()) : null,
            data,
          }),
        };
      case "message:send": {
        const { channel, text } = data as { channel: string; text: string };
        if (!backend.api) throw new Error("no gateway API yet");
        const { offset } = await backend.api.publish(channel, "message", {
          text,
          user: request.user,
        });
        return { data: json({ offset }) };
      }
      case "fail":
        return { error: { code: 1422, message: "text is empty" } };
      default:
        return { error: { code: 1404, message: "unknown method" } };
    }
  };
  const server = new grpc.Server();
  server.addService(loaded.herald.v1.Backend.service, {
    Rpc: (
      call: grpc.ServerUnaryCall<RpcRequest, RpcResponse>,
      callback: grpc.sendUnaryData<RpcResponse>,
    ) => {
      rpc(call.request).then(
        (response) => callback(null, response),
        (error: unknown) => callback({ code: grpc.status.INTERNAL, details: String(error) }, null),
      );
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  afterAll(() => server.forceShutdown());
  backend.address = `http://127.0.0.1:${port}`;
  return backend;
}

const backend = await startBackend();
const env = await gatewayWithApi({ env: { HERALD_BACKEND_ADDR: backend.address } });
const { gateway } = env;
backend.api = env.api;

/** A `ws` WebSocket that records what each connection sends (one array per connection). */
function recordingWebSocket(): { WebSocket: WebSocketConstructor; sent: string[][] } {
  const sent: string[][] = [];
  class Recording extends WebSocket {
    constructor(...args: ConstructorParameters<typeof WebSocket>) {
      super(...args);
      const frames: string[] = [];
      sent.push(frames);
      const send = this.send.bind(this) as (...sendArgs: unknown[]) => void;
      this.send = ((data: unknown, ...rest: unknown[]) => {
        frames.push(String(data));
        send(data, ...rest);
      }) as WebSocket["send"];
    }
  }
  return { WebSocket: Recording as unknown as WebSocketConstructor, sent };
}

/** The methods of the commands in `frames`. */
function methods(frames: readonly string[]): string[] {
  return frames
    .flatMap((frame) => frame.split("\n"))
    .filter((line) => line.trim() !== "")
    .map((line) => Object.keys(JSON.parse(line) as object).find((key) => key !== "id") ?? "");
}

describe("rpc to the app's backend", () => {
  it("round-trips: the backend sees the connection's user, client, orgs, info and data", async () => {
    const { client } = makeClient(gateway, "ada", { claims: { info: { name: "Ada" } } });
    client.connect();
    await reach(client, "connected");
    const reply = await client.rpc("echo", { n: 1, text: "hé\n" });
    expect(reply).toEqual({
      user: "ada",
      client: client.getClientId(),
      orgs: ["acme"],
      info: { name: "Ada" },
      data: { n: 1, text: "hé\n" },
    });
    expect(backend.calls.at(-1)).toMatchObject({ method: "echo", user: "ada" });
    expect(await client.rpc("echo")).toMatchObject({ data: null });
    client.disconnect();
  });

  it("passes the backend's error code and message through", async () => {
    const { client } = makeClient(gateway, "ada");
    client.connect();
    const error = await client.rpc("fail", { text: "" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({ code: 1422, temporary: false });
    expect((error as HeraldError).message).toContain("text is empty");
    client.disconnect();
  });

  it("queues a call made offline and sends it after the connect; works over protobuf", async () => {
    const { client } = makeClient(gateway, "bob", { protocol: "protobuf" });
    const reply = client.rpc("echo", [1, 2]);
    client.connect();
    expect(await reply).toMatchObject({ user: "bob", data: [1, 2] });
    client.disconnect();
  });

  it("is the demo's pattern: client → backend → gRPC Publish → every subscriber", async () => {
    const channel = "org:acme:ch:rpc-chat";
    const sender = makeClient(gateway, "ada").client;
    const reader = makeClient(gateway, "bob").client;
    sender.connect();
    reader.connect();
    const sub = reader.subscribe<{ message: { text: string; user: string } }>(channel);
    await active(sub);
    const received = waitFor<{ text: string; user: string }>("the message", (cb) =>
      sub.on("message", cb),
    );
    const reply = (await sender.rpc("message:send", { channel, text: "hi" })) as {
      offset: number;
    };
    expect(await received).toEqual({ text: "hi", user: "ada" });
    expect(sub.position?.offset).toBe(reply.offset);
    sender.disconnect();
    reader.disconnect();
  });
});

describe("server-side subscriptions", () => {
  it("the SDK sees one, recovers it across a forced reconnect without resubscribing, and loses it on Unsubscribe", async () => {
    const channel = "org:acme:ch:server-side";
    const recording = recordingWebSocket();
    // 4200 reconnects after 0-2 s of jitter: random 1 makes it 2 s, time to publish meanwhile.
    const { client } = makeClient(gateway, "sam", {
      WebSocket: recording.WebSocket,
      backoff: { jitterMs: 2000 },
      random: () => 0.999,
    });
    client.connect();
    await reach(client, "connected");

    const added = waitFor<{ channel: string }>("server_subscribed", (cb) =>
      client.on("server_subscribed", cb),
    );
    await env.api.subscribe("sam", channel);
    expect(await added).toEqual({ channel });
    expect(client.getServerSubscriptions()).toEqual([channel]);
    const sub = client.subscribe<{ n: { n: number } }>(channel);
    await active(sub);
    expect(sub.serverSide).toBe(true);
    const seen: number[] = [];
    sub.on("n", (data) => seen.push(data.n));
    const third = waitFor(
      "the third publication",
      (cb) => sub.on("n", cb),
      () => seen.length >= 3,
    );
    for (let n = 1; n <= 3; n++) await env.api.publish(channel, "n", { n });
    await third;

    const recovered = waitFor<SubscribedInfo>("recovered", (cb) => sub.on("recovered", cb));
    let stateLost = false;
    sub.on("state_lost", () => (stateLost = true));
    expect(await env.api.disconnect("sam", 4200, "test: reconnect now")).toBe(1);
    await reach(client, "reconnecting");
    for (let n = 4; n <= 6; n++) await env.api.publish(channel, "n", { n });
    const info = await recovered;
    expect(info.recovered).toBe(true);
    expect(info.recoveredPublications).toBe(3);
    expect(stateLost).toBe(false);
    const seventh = waitFor(
      "the seventh publication",
      (cb) => sub.on("n", cb),
      () => seen.length >= 7,
    );
    await env.api.publish(channel, "n", { n: 7 });
    await seventh;
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7]);

    // The second connection sent the position in `connect` and no `subscribe` of its own.
    expect(recording.sent).toHaveLength(2);
    const second = recording.sent[1] as string[];
    expect(methods(second)).not.toContain("subscribe");
    const connect = JSON.parse(second[0]?.split("\n")[0] ?? "{}") as {
      connect?: { subs?: Record<string, { offset: number; epoch: string }> };
    };
    expect(connect.connect?.subs?.[channel]?.offset).toBe(3);

    const removed = waitFor<UnsubscribedInfo>("server_unsubscribed", (cb) =>
      client.on("server_unsubscribed", cb),
    );
    await env.api.unsubscribe("sam", channel);
    expect(await removed).toMatchObject({ channel, code: 2000 });
    expect(sub.state).toBe("ended");
    expect(client.getServerSubscriptions()).toEqual([]);
    client.disconnect();
  });

  it("needs no token claim; over protobuf, a handle made before the Subscribe gets its publications", async () => {
    const channel = "org:acme:ch:server-side-proto";
    const { client } = makeClient(gateway, "pia", {
      protocol: "protobuf",
      claims: { orgs: ["globex"], channels: [] },
    });
    client.connect();
    await reach(client, "connected");
    // The app listens first; the token does not allow the channel, so its own subscribe fails.
    const sub = client.subscribe<{ n: { n: number } }>(channel);
    const refused = waitFor<HeraldError>("the refusal", (cb) => sub.on("error", cb));
    expect(await refused).toMatchObject({ temporary: false });
    expect(sub.state).toBe("failed");
    const first = waitFor<{ n: number }>("a publication", (cb) => sub.on("n", cb));
    const added = waitFor("server_subscribed", (cb) => client.on("server_subscribed", cb));
    await env.api.subscribe("pia", channel);
    await added;
    await active(sub);
    expect(sub.serverSide).toBe(true);
    await env.api.publish(channel, "n", { n: 1 });
    expect(await first).toEqual({ n: 1 });
    const removed = waitFor<UnsubscribedInfo>("unsubscribed", (cb) => sub.on("unsubscribed", cb));
    await env.api.unsubscribe("pia", channel);
    expect(await removed).toMatchObject({ code: 2000 });
    client.disconnect();
  });

  it("one connection's subscription is not kept: after a reconnect the gateway ends it (2000)", async () => {
    const channel = "org:acme:ch:server-side-one";
    const { client } = makeClient(gateway, "quinn", { backoff: { jitterMs: 10 } });
    client.connect();
    await reach(client, "connected");
    const added = waitFor("server_subscribed", (cb) => client.on("server_subscribed", cb));
    await env.api.subscribe("quinn", channel, client.getClientId() ?? "");
    await added;
    const removed = waitFor<UnsubscribedInfo>("server_unsubscribed", (cb) =>
      client.on("server_unsubscribed", cb),
    );
    expect(await env.api.disconnect("quinn", 4200, "test: reconnect now")).toBe(1);
    expect(await removed).toMatchObject({ channel, code: 2000 });
    expect(client.getServerSubscriptions()).toEqual([]);
    client.disconnect();
  });
});
