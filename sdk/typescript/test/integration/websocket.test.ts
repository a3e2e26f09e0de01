import { describe, expect, it } from "vitest";
import type { Publication } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { waitFor } from "../helpers/wait.js";

const { gateway, api } = await gatewayWithApi();

describe("over WebSocket", () => {
  it("connects, subscribes and receives a gRPC publish", async () => {
    const { client } = makeClient(gateway, "alice");
    client.connect();
    await reach(client, "connected");
    expect(client.getTransport()).toBe("websocket");
    const sub = client.subscribe<{ "message.created": { id: string } }>("org:acme:ch:general");
    await active(sub);
    const received = waitFor<Publication<{ id: string }>>("the publication", (cb) =>
      sub.on("message.created", (_data, pub) => cb(pub)),
    );
    const position = await api.publish("org:acme:ch:general", "message.created", { id: "m1" });
    const pub = await received;
    expect(pub.data).toEqual({ id: "m1" });
    expect(pub.offset).toBe(position.offset);
    expect(pub.epoch).toBe(position.epoch);
    client.disconnect();
  });
});
