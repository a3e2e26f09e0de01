import { describe, expect, it } from "vitest";
import type { Publication, PresenceMember, Typer } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { waitFor } from "../helpers/wait.js";

const { gateway, api } = await gatewayWithApi();

describe("the binary subprotocol (protocol: 'protobuf')", () => {
  it("receives publications, history, presence and typing over binary frames", async () => {
    const channel = "org:acme:ch:proto";
    const alice = makeClient(gateway, "alice", {
      protocol: "protobuf",
      claims: { info: { name: "Ada" } },
    }).client;
    const bob = makeClient(gateway, "bob", { claims: { info: { name: "Bob" } } }).client;
    alice.connect();
    await reach(alice, "connected");
    expect(alice.getTransport()).toBe("websocket");
    const sub = alice.subscribe<{ "message.created": { id: string; text: string } }>(channel);
    await active(sub);

    const received = waitFor<Publication<{ id: string; text: string }>>("the publication", (cb) =>
      sub.on("message.created", (_data, pub) => cb(pub)),
    );
    const position = await api.publish(channel, "message.created", { id: "m1", text: "hé\n" });
    const pub = await received;
    expect(pub.data).toEqual({ id: "m1", text: "hé\n" });
    expect(pub.offset).toBe(position.offset);
    expect(pub.epoch).toBe(position.epoch);

    const history = await alice.history(channel, { limit: 10 });
    expect(history.publications.map((p) => p.data)).toEqual([{ id: "m1", text: "hé\n" }]);

    // Bob (JSON) joins and types: alice gets both pushes in binary.
    const joined = waitFor<PresenceMember>("bob's join", (cb) => sub.presence.onJoin(cb));
    const typing = waitFor<readonly Typer[]>(
      "bob typing",
      (cb) => sub.typing.onChange(cb),
      (typers) => typers.length === 1,
    );
    bob.connect();
    const bobSub = bob.subscribe(channel);
    await active(bobSub);
    expect(await joined).toMatchObject({ userId: "bob", name: "Bob" });
    bobSub.typing.start();
    expect((await typing)[0]).toMatchObject({ userId: "bob", name: "Bob" });

    await alice.setPresenceState("away");
    alice.disconnect();
    bob.disconnect();
  });
});
