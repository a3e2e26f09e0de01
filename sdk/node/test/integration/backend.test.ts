import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BackendError,
  HeraldServer,
  serveBackend,
  type BackendServer,
  type RpcRequest,
} from "../../src/index.js";
import { startGateway, type Gateway } from "../../../typescript/test/helpers/gateway.js";
import { mintToken } from "../../../typescript/test/helpers/token.js";
import { connectWs, type WsClient } from "../helpers/ws-client.js";
import type { CommandError } from "../helpers/ws-client.js";

const TOKEN = "backend-token-1";

let backend: BackendServer;
let gateway: Gateway;
let herald: HeraldServer;
const sockets: WsClient[] = [];
const seen: RpcRequest[] = [];

beforeAll(async () => {
  // The backend starts first: the gateway needs its address.
  backend = await serveBackend(
    {
      async rpc(request) {
        seen.push(request);
        const data = request.data as { channel: string; text?: string };
        switch (request.method) {
          case "message:send": {
            const { offset } = await herald.publish(data.channel, "message:new", {
              text: data.text,
              from: request.user,
            });
            return { offset };
          }
          case "join-room":
            await herald.subscribe(request.user, data.channel, { client: request.client });
            return { channel: data.channel };
          default:
            throw new BackendError(1404, `unknown method ${request.method}`);
        }
      },
    },
    { address: "127.0.0.1:0", token: TOKEN },
  );
  gateway = await startGateway({
    env: {
      HERALD_BACKEND_ADDR: `http://127.0.0.1:${backend.port}`,
      HERALD_BACKEND_TOKEN: TOKEN,
    },
  });
  herald = new HeraldServer({ address: gateway.grpcAddr, apiKey: gateway.apiKey });
});

afterAll(async () => {
  for (const socket of sockets) socket.close();
  herald?.close();
  await gateway?.stop();
  await backend?.close();
});

async function connect(sub: string, channels?: string[]): Promise<WsClient> {
  const socket = await connectWs(gateway.wsUrl, mintToken(gateway.secret, { sub, channels }));
  sockets.push(socket);
  return socket;
}

describe("serveBackend behind the gateway", () => {
  it("answers a client rpc, and publishes through the gRPC API meanwhile", async () => {
    const alice = await connect("alice");
    await alice.command("subscribe", { channel: "org:acme:ch:general" });
    const result = await alice.command<{ data: { offset: number } }>("rpc", {
      method: "message:send",
      data: { channel: "org:acme:ch:general", text: "hi" },
    });
    expect(result.data).toEqual({ offset: 1 });
    const push = await alice.push("the published message", (p) => p.pub !== undefined);
    expect(push.pub).toMatchObject({ event: "message:new", data: { text: "hi", from: "alice" } });
    expect(seen.at(-1)).toMatchObject({
      user: "alice",
      client: alice.connected.client,
      orgs: ["acme"],
      info: { name: "alice" },
      method: "message:send",
      node: alice.connected.node,
    });
  });

  it("a BackendError reaches the client with its code and message", async () => {
    const bob = await connect("bob");
    const error = await bob.command("rpc", { method: "nope", data: null }).catch((e) => e);
    expect(error as CommandError).toEqual({
      code: 1404,
      message: "unknown method nope",
      temporary: false,
    });
  });

  it("a backend method subscribes the calling connection", async () => {
    const carol = await connect("carol", []);
    const channel = "org:acme:room:9";
    await carol.command("rpc", { method: "join-room", data: { channel } });
    await carol.push("the subscribe push", (p) => p.channel === channel && !!p.subscribe);
  });
});

describe("the backend token", () => {
  it("a gateway sending another token gets no answer: the client sees 112", async () => {
    const other = await startGateway({
      env: {
        HERALD_BACKEND_ADDR: `http://127.0.0.1:${backend.port}`,
        HERALD_BACKEND_TOKEN: "wrong",
      },
    });
    try {
      const socket = await connectWs(other.wsUrl, mintToken(other.secret, { sub: "eve" }));
      sockets.push(socket);
      const calls = seen.length;
      const error = await socket
        .command("rpc", { method: "message:send", data: { channel: "org:acme:ch:x" } })
        .catch((e) => e);
      expect((error as CommandError).code).toBe(112);
      expect(seen.length).toBe(calls);
    } finally {
      await other.stop();
    }
  });
});
