/**
 * Per-channel presence state against the gateway. Skipped, with the reason, while the
 * binary has no `setPresenceState` command (probed: the gateway answers error 104 or closes
 * the connection); HERALD_PRESENCE_STATE_REQUIRED=1 makes that a failure.
 */
import { afterAll, describe, expect, it } from "vitest";
import {
  ErrorCodes,
  HeraldError,
  type PresenceMember,
  type ProtocolMode,
} from "../../src/index.js";
import { active, makeClient as makeBaseClient } from "../helpers/clients.js";
import { CHAT_NAMESPACE, HERALD_BIN } from "../helpers/gateway.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { waitFor } from "../helpers/wait.js";

const { gateway, api } = await gatewayWithApi({ config: CHAT_NAMESPACE });
const unavailable = await probe();

afterAll(async () => {
  await gateway.stop();
});

/** Null when the gateway takes `setPresenceState`, else why the suite cannot run. */
async function probe(): Promise<string | null> {
  const { client } = makeBaseClient(gateway, "probe");
  const channel = "chat:acme:probe";
  try {
    await active(client.subscribe(channel));
    await client.setPresenceState(channel, null);
    return null;
  } catch (error) {
    const missing =
      error instanceof HeraldError &&
      (error.code === ErrorCodes.methodNotFound || error.code === "disconnected");
    if (!missing) throw error;
    return `${HERALD_BIN} has no setPresenceState command (${error.message})`;
  } finally {
    client.disconnect();
  }
}

/** Resolves once `members` of a handle's presence satisfy `accept`. */
function membersWhere(
  sub: { presence: { getMembers(): readonly PresenceMember[]; onUpdate: any } },
  what: string,
  accept: (members: readonly PresenceMember[]) => boolean,
): Promise<unknown> {
  if (accept(sub.presence.getMembers())) return Promise.resolve();
  return waitFor(what, (cb) => sub.presence.onUpdate(cb), accept);
}

const isEqual = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

const stateOf = (members: readonly PresenceMember[], user: string) =>
  members.find((m) => m.userId === user)?.state;

function presenceStateSuite(protocol: ProtocolMode): void {
  const makeClient = (gw: typeof gateway, sub: string) => makeBaseClient(gw, sub, { protocol });

  it("shows a member's state to the others, in pushes and in presence results", async () => {
    const channel = "chat:acme:ps";
    const alice = makeClient(gateway, "alice").client;
    const bob = makeClient(gateway, "bob").client;
    const aliceSub = alice.subscribe(channel);
    const bobSub = bob.subscribe(channel);
    await Promise.all([active(aliceSub), active(bobSub)]);
    await membersWhere(bobSub, "alice in bob's list", (m) => m.some((x) => x.userId === "alice"));

    await alice.setPresenceState(channel, { cell: "B3" });
    expect(aliceSub.presence.getMyState()).toEqual({ cell: "B3" });
    await membersWhere(bobSub, "alice's state", (m) =>
      isEqual(stateOf(m, "alice"), { cell: "B3" }),
    );

    // A member who comes later reads it from the presence result.
    const carol = makeClient(gateway, "carol").client;
    const carolSub = carol.subscribe(channel);
    await membersWhere(
      carolSub,
      "alice's state for carol",
      (m) => stateOf(m, "alice") !== undefined,
    );
    expect(stateOf(carolSub.presence.getMembers(), "alice")).toEqual({ cell: "B3" });

    await alice.setPresenceState(channel, null);
    await membersWhere(bobSub, "alice's state cleared", (m) => stateOf(m, "alice") === undefined);
    for (const client of [alice, bob, carol]) client.disconnect();
  });

  it("sets the state again after a reconnect's resubscribe", async () => {
    const channel = "chat:acme:ps-reconnect";
    const alice = makeClient(gateway, "dana").client;
    const bob = makeClient(gateway, "bob").client;
    const aliceSub = alice.subscribe(channel);
    const bobSub = bob.subscribe(channel);
    await Promise.all([active(aliceSub), active(bobSub)]);
    await alice.setPresenceState(channel, "editing");
    const first = alice.getClientId();
    await api.disconnect("dana", 4200, "restart");
    await membersWhere(bobSub, "dana back with her state", (members) =>
      members.some((m) => m.userId === "dana" && m.clientId !== first && m.state === "editing"),
    );
    alice.disconnect();
    bob.disconnect();
  });

  it("refuses a state over 1024 bytes locally", async () => {
    const channel = "chat:acme:ps-big";
    const alice = makeClient(gateway, "alice").client;
    await active(alice.subscribe(channel));
    const error = await alice
      .setPresenceState(channel, "x".repeat(2000))
      .catch((e: HeraldError) => e.code);
    expect(error).toBe("message_too_large");
    expect(alice.getConnectionState()).toBe("connected");
    alice.disconnect();
  });
}

const PROTOCOLS: ProtocolMode[] = ["json", "protobuf"];

if (unavailable === null) {
  describe.each(PROTOCOLS)("per-channel presence state (%s)", presenceStateSuite);
} else if (process.env["HERALD_PRESENCE_STATE_REQUIRED"] === "1") {
  it("has a herald binary with setPresenceState", () => {
    throw new Error(unavailable);
  });
} else {
  console.warn(`presence state against the gateway skipped: ${unavailable}`);
  describe.skip(`per-channel presence state skipped: ${unavailable}`, () =>
    presenceStateSuite("json"));
}
