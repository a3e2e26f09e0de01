import { describe, expect, it } from "vitest";
import { makeClient, reach } from "../helpers/clients.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { waitFor } from "../helpers/wait.js";

const { gateway, api } = await gatewayWithApi();

describe("tokens", () => {
  it("refreshes a short-lived token on the open connection, never reconnecting", async () => {
    const { client, tokens } = makeClient(gateway, "tom", { claims: { ttlSeconds: 3 } });
    const states: string[] = [];
    client.onConnectionChange((state) => states.push(state));
    let refreshes = 0;
    client.on("token_refreshed", () => (refreshes += 1));
    client.connect();
    await reach(client, "connected");
    const clientId = client.getClientId();
    expect(await api.connections()).toBe(1);
    // Three 3-second tokens back to back: the first one's exp passes long before the end.
    await waitFor(
      "three refreshes",
      (cb) => client.on("token_refreshed", cb),
      () => refreshes >= 3,
      15_000,
    );
    expect(client.getClientId()).toBe(clientId);
    expect(client.getConnectionState()).toBe("connected");
    expect(states).toEqual(["connecting", "connected"]);
    expect(tokens()).toBe(1 + refreshes);
    expect(await api.connections()).toBe(1);
    client.disconnect();
  });

  it("gets a new token and reconnects at once after 4002", async () => {
    const { client, tokens } = makeClient(gateway, "tina");
    client.connect();
    await reach(client, "connected");
    const first = client.getClientId();
    const back = waitFor("a new session", (cb) => client.on("connected", cb));
    await api.disconnect("tina", 4002, "token expired");
    await back;
    expect(client.getClientId()).not.toBe(first);
    expect(tokens()).toBe(2);
    client.disconnect();
  });

  it("stops on 4001 (state disconnected, no retry)", async () => {
    const { client } = makeClient(gateway, "ursula");
    client.connect();
    await reach(client, "connected");
    await api.disconnect("ursula", 4001, "unauthorized");
    await reach(client, "disconnected");
    expect(await api.connections()).toBe(0);
    client.disconnect();
  });

  it("does not connect with a token signed by another key", async () => {
    const { client } = makeClient(gateway, "mallory");
    // Swap the secret: the gateway answers error 101 and closes 4001.
    const bad = { ...gateway, secret: "x".repeat(40) };
    const { client: impostor } = makeClient(bad, "mallory");
    const closed = waitFor<{ code: number }>("the close", (cb) => impostor.on("disconnected", cb));
    impostor.connect();
    expect((await closed).code).toBe(4001);
    expect(impostor.getConnectionState()).toBe("disconnected");
    client.disconnect();
  });
});
