import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HeraldClient, PresenceMember, Subscription } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { waitFor } from "../helpers/wait.js";

// Past 3 members the gateway batches joins and leaves into one `presence` push a second.
let gateway: Gateway;

beforeAll(async () => {
  gateway = await startGateway({ env: { HERALD_PRESENCE_PUSH_LIMIT: "3" } });
});

afterAll(async () => {
  await gateway?.stop();
});

const ids = (members: readonly PresenceMember[]) => members.map((m) => m.clientId).sort();

describe("presence on a channel over the push limit", () => {
  it("keeps the member list right from batched diffs", async () => {
    const channel = "org:acme:ch:crowd";
    const watcher = makeClient(gateway, "watcher").client;
    watcher.connect();
    const watched = watcher.subscribe(channel);
    await waitFor<readonly PresenceMember[]>(
      "the watcher alone",
      (cb) => watched.presence.onUpdate(cb),
      (members) => members.length === 1,
    );

    const crowd: { client: HeraldClient; sub: Subscription }[] = [];
    for (let i = 0; i < 20; i++) {
      const client = makeClient(gateway, `user-${i}`).client;
      client.connect();
      const sub = client.subscribe(channel);
      await active(sub);
      crowd.push({ client, sub });
    }
    // Five leave: three by disconnecting, two by unsubscribing.
    for (const { client } of crowd.splice(0, 3)) client.disconnect();
    for (const { sub } of crowd.slice(0, 2)) sub.unsubscribe();
    const staying = crowd.slice(2).map(({ client }) => client);
    await Promise.all(staying.map((client) => reach(client, "connected")));
    const expected = [watcher, ...staying].map((client) => client.getClientId() as string).sort();

    const settled = (members: readonly PresenceMember[]) => ids(members).join() === expected.join();
    if (!settled(watched.presence.getMembers())) {
      await waitFor("the watcher's list to settle", (cb) => watched.presence.onUpdate(cb), settled);
    }
    expect(ids(watched.presence.getMembers())).toEqual(expected);

    // A late subscriber's list comes from the presence reply: the same members.
    const late = makeClient(gateway, "late").client;
    late.connect();
    const lateSub = late.subscribe(channel);
    const fetched = await waitFor<readonly PresenceMember[]>(
      "the late subscriber's list",
      (cb) => lateSub.presence.onUpdate(cb),
      (members) => members.length === expected.length + 1,
    );
    expect(ids(fetched.filter((m) => m.userId !== "late"))).toEqual(expected);

    for (const client of [watcher, late, ...crowd.map(({ client }) => client)]) {
      client.disconnect();
    }
  });
});
