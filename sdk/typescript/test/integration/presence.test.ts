import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PresenceMember, Typer } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { waitFor } from "../helpers/wait.js";

let gateway: Gateway;

beforeAll(async () => {
  gateway = await startGateway();
});

afterAll(async () => {
  await gateway?.stop();
});

const users = (members: readonly PresenceMember[]) => members.map((m) => m.userId).sort();

describe("presence and typing between two clients", () => {
  it("keeps a live member list with joins, leaves and statuses", async () => {
    const channel = "org:acme:ch:presence";
    const alice = makeClient(gateway, "alice", {
      claims: { info: { name: "Ada", avatar: "https://a.example/ada.png" } },
    }).client;
    const bob = makeClient(gateway, "bob", { claims: { info: { name: "Bob" } } }).client;
    alice.connect();
    const aliceSub = alice.subscribe(channel);
    const aliceOrg = alice.subscribe("org:acme");
    await waitFor<readonly PresenceMember[]>(
      "alice alone",
      (cb) => aliceSub.presence.onUpdate(cb),
      (members) => members.length === 1,
    );
    const self = aliceSub.presence.getMembers()[0] as PresenceMember;
    expect(self).toMatchObject({
      userId: "alice",
      name: "Ada",
      avatar: "https://a.example/ada.png",
      status: "online",
    });
    await reach(alice, "connected");
    expect(self.clientId).toBe(alice.getClientId());
    expect(self.joinedAt).toBeGreaterThan(0);

    const joined = waitFor<PresenceMember>("bob's join", (cb) => aliceSub.presence.onJoin(cb));
    bob.connect();
    const bobSub = bob.subscribe(channel);
    const bobOrg = bob.subscribe("org:acme");
    await active(bobSub);
    await active(bobOrg);
    expect(await joined).toMatchObject({ userId: "bob", name: "Bob" });
    expect(users(aliceSub.presence.getMembers())).toEqual(["alice", "bob"]);

    // Bob's own list, fetched after his subscribe, has both.
    const bobList = await waitFor<readonly PresenceMember[]>("bob's list", (cb) =>
      bobSub.presence.onUpdate(cb),
    );
    expect(users(bobList)).toEqual(["alice", "bob"]);

    // Bob goes away: the status push on org:acme updates alice's members.
    await active(aliceOrg);
    const away = waitFor<readonly PresenceMember[]>(
      "bob away",
      (cb) => aliceSub.presence.onUpdate(cb),
      (members) => members.some((m) => m.userId === "bob" && m.status === "away"),
    );
    await bob.setPresenceState("away");
    await away;

    const left = waitFor<PresenceMember>("bob's leave", (cb) => aliceSub.presence.onLeave(cb));
    bobSub.unsubscribe();
    expect((await left).userId).toBe("bob");
    expect(users(aliceSub.presence.getMembers())).toEqual(["alice"]);
    alice.disconnect();
    bob.disconnect();
  });

  it("shows who is typing, throttled, and clears on stop", async () => {
    const channel = "org:acme:ch:typing";
    const alice = makeClient(gateway, "alice2", { claims: { info: { name: "Ada" } } }).client;
    const bob = makeClient(gateway, "bob2", { claims: { info: { name: "Bob" } } }).client;
    alice.connect();
    bob.connect();
    const aliceSub = alice.subscribe(channel);
    const bobSub = bob.subscribe(channel);
    await active(aliceSub);
    await active(bobSub);

    const typing = waitFor<readonly Typer[]>(
      "bob typing",
      (cb) => aliceSub.typing.onChange(cb),
      (t) => t.length === 1,
    );
    bobSub.typing.start();
    bobSub.typing.start(); // throttled: one command
    const typers = await typing;
    expect(typers[0]).toMatchObject({ userId: "bob2", name: "Bob" });
    expect(bobSub.typing.getTypers()).toEqual([]); // no echo of one's own typing

    // A third client subscribing now sees bob in its subscribe result.
    const carol = makeClient(gateway, "carol2").client;
    carol.connect();
    const carolSub = carol.subscribe(channel);
    await active(carolSub);
    expect(carolSub.typing.getTypers().map((t) => t.userId)).toEqual(["bob2"]);

    const stopped = waitFor<readonly Typer[]>(
      "bob stopped",
      (cb) => aliceSub.typing.onChange(cb),
      (t) => t.length === 0,
    );
    bobSub.typing.stop();
    await stopped;
    alice.disconnect();
    bob.disconnect();
    carol.disconnect();
  });
});
