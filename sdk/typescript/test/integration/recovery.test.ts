import { describe, expect, it } from "vitest";
import type { SubscribedInfo } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { connectApi, gatewayWithApi } from "../helpers/grpc.js";
import { publishThroughDisconnect } from "../helpers/scenarios.js";
import { waitFor } from "../helpers/wait.js";

const env = await gatewayWithApi();
const { gateway } = env;

describe("recovery", () => {
  it("after a 4201 close, receives every publication once, in order, and emits recovered", async () => {
    const { client } = makeClient(gateway, "rita");
    const run = await publishThroughDisconnect(
      env.api,
      client,
      "rita",
      "org:acme:ch:recover",
      4201,
    );
    expect(run.closes).toEqual([4201]);
    expect(run.recovered.recovered).toBe(true);
    expect(run.recovered.recoveredPublications).toBeGreaterThan(0);
    expect(run.stateLost).toBe(false);
    expect(run.seen).toEqual(Array.from({ length: run.published }, (_, i) => i + 1));
    client.disconnect();
  });

  it("after a gateway restart, emits state_lost and goes on with the new epoch", async () => {
    const channel = "org:acme:ch:restart";
    const { client } = makeClient(gateway, "sam", { backoff: { initialMs: 100, jitterMs: 100 } });
    client.connect();
    const sub = client.subscribe(channel);
    await active(sub);
    const first = waitFor("the first publication", (cb) => sub.on("*", cb));
    await env.api.publish(channel, "m", { x: 1 });
    await first;
    const before = sub.position;
    expect(before?.offset).toBe(1);

    const lost = waitFor<SubscribedInfo>(
      "state_lost",
      (cb) => sub.on("state_lost", cb),
      () => true,
      20_000,
    );
    await gateway.kill();
    await reach(client, "reconnecting");
    await gateway.start();
    const info = await lost;
    expect(info.recovered).toBe(false);
    expect(info.position.epoch).not.toBe(before?.epoch);

    const after = waitFor<unknown>("a publication after the restart", (cb) => sub.on("m", cb));
    env.api.close();
    env.api = connectApi(gateway.grpcAddr, gateway.apiKey);
    await env.api.publish(channel, "m", { x: 2 });
    expect(await after).toEqual({ x: 2 });
    client.disconnect();
  });
});
