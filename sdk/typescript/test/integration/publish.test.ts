import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HeraldError, type Publication } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { CHAT_NAMESPACE, startGateway, type Gateway } from "../helpers/gateway.js";
import { waitFor } from "../helpers/wait.js";

let gateway: Gateway;

beforeAll(async () => {
  gateway = await startGateway({ config: CHAT_NAMESPACE });
});

afterAll(async () => {
  await gateway?.stop();
});

describe("client publish", () => {
  it("publishes where the namespace allows it, stamped with the sender", async () => {
    const channel = "chat:acme:room";
    const alice = makeClient(gateway, "alice").client;
    const bob = makeClient(gateway, "bob").client;
    alice.connect();
    bob.connect();
    const bobSub = bob.subscribe<{ "message.created": { text: string } }>(channel);
    await active(bobSub);
    await reach(alice, "connected");
    const received = waitFor<Publication<{ text: string }>>("alice's message", (cb) =>
      bobSub.on("message.created", (_data, pub) => cb(pub)),
    );
    const result = await alice.publish(channel, "message.created", { text: "hi <b>" });
    expect(result.offset).toBeGreaterThan(0);
    const pub = await received;
    expect(pub).toMatchObject({
      data: { text: "hi <b>" },
      from: "alice",
      offset: result.offset,
      epoch: result.epoch,
    });

    const history = await bob.history(channel, { limit: 10 });
    expect(history.publications.map((p) => p.data)).toEqual([{ text: "hi <b>" }]);
    alice.disconnect();
    bob.disconnect();
  });

  it("queues publishes made offline and sends them in order once connected", async () => {
    const channel = "chat:acme:queue";
    const bob = makeClient(gateway, "bob").client;
    bob.connect();
    const bobSub = bob.subscribe(channel);
    await active(bobSub);
    const seen: unknown[] = [];
    bobSub.on("n", (data) => seen.push(data));

    const alice = makeClient(gateway, "alice").client;
    const results = [1, 2, 3].map((n) => alice.publish(channel, "n", n));
    alice.connect();
    const offsets = (await Promise.all(results)).map((r) => r.offset);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    if (seen.length < 3)
      await waitFor(
        "three messages",
        (cb) => bobSub.on("n", cb),
        () => seen.length >= 3,
      );
    expect(seen).toEqual([1, 2, 3]);
    alice.disconnect();
    bob.disconnect();
  });

  it("rejects a publish on a namespace without client publish with the protocol's code", async () => {
    const alice = makeClient(gateway, "alice").client;
    alice.connect();
    await reach(alice, "connected");
    const error = await alice.publish("org:acme:ch:general", "x", {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect((error as HeraldError).code).toBe(103);
    expect((error as HeraldError).temporary).toBe(false);
    alice.disconnect();
  });
});
