/**
 * Connection state recovery (socket.io-client ≥ 4.6 against `connectionStateRecovery`), as
 * the cases drive it deterministically: the client does not reconnect by itself; the target
 * drops the connection, the test waits for the client's `disconnect`, publishes what the
 * client misses, then calls `connect()` on the same `Socket`, which sends its pid and last
 * offset in CONNECT. The cases never look inside pids or offsets.
 */
import type { Socket } from "socket.io-client";
import { expect, it } from "vitest";
import { connected, fresh, nextEvent, request, waitFor, type Reply } from "./helpers/client.js";
import type { ClusterTarget } from "./helpers/herald.js";
import type { Suite } from "./helpers/suite.js";
import type { Target } from "./helpers/target.js";
import { mintSubscriptionToken, mintToken } from "./helpers/token.js";

/** What socket.io-client keeps for a recovery (private fields, sent in its next CONNECT). */
export function recoveryState(socket: Socket): { pid?: string; offset?: string } {
  const state = socket as unknown as { _pid?: string; _lastOffset?: string };
  return { pid: state._pid, offset: state._lastOffset };
}

/** The test's `message:new` publications on one channel and what one socket got of them. */
export class Feed {
  readonly sent: string[] = [];
  readonly received: string[] = [];

  constructor(
    private readonly target: Target,
    readonly channel: string,
    private readonly socket: Socket,
  ) {
    // A socket may hold several feeds: each takes its own channel's. (The offset, a last
    // argument, is the client's business.)
    socket.on("message:new", (data: { channel: string; text: string }) => {
      if (data.channel === channel) this.received.push(data.text);
    });
  }

  /** Publishes `text` (through `via`, else the feed's target). */
  async publish(text: string, via: Pick<Target, "publish"> = this.target): Promise<void> {
    this.sent.push(text);
    await via.publish(this.channel, "message:new", { channel: this.channel, text });
  }

  /** Resolves once `text` has arrived (bounded). */
  arrived(text: string): Promise<void> {
    return waitFor<void>(`${text} on ${this.channel}`, (callback) => {
      const check = () => {
        if (this.received.includes(text)) callback();
      };
      this.socket.on("message:new", check);
      check();
      return () => this.socket.off("message:new", check);
    });
  }
}

/** Every first argument of `event` on `socket` from now on. */
export function record<T>(socket: Socket, event: string): T[] {
  const seen: T[] = [];
  socket.on(event, (data: T) => seen.push(data));
  return seen;
}

/** Drops `user`'s one connection with a reconnect-now close and waits until the client saw it. */
export async function drop(target: Target, socket: Socket, user: string): Promise<void> {
  const reason = nextEvent<string>(socket, "disconnect");
  expect(await target.disconnect(user, 4200)).toBe(1);
  expect(await reason).toBe("transport close");
}

/** Connects the same `socket` again (with its pid and offset) and waits until it is connected. */
export async function reconnect(socket: Socket): Promise<void> {
  const done = connected(socket);
  socket.connect();
  await done;
}

/**
 * Drops `user`'s connection, publishes `missed` events meanwhile and reconnects: the session
 * is recovered with exactly the missed events in order, then a live one arrives on the same
 * subscription.
 */
async function expectRecovered(
  target: Target,
  socket: Socket,
  user: string,
  feed: Feed,
  missed: number,
): Promise<void> {
  await drop(target, socket, user);
  for (let n = 1; n <= missed; n++) await feed.publish(`missed ${n}`);
  await reconnect(socket);
  expect(socket.recovered).toBe(true);
  // Still subscribed: a live event arrives with no new herald:subscribe.
  await feed.publish("live");
  await feed.arrived("live");
  expect(feed.received).toEqual(feed.sent);
}

/** A connected socket of `user` that the test reconnects itself (no reconnection of its own). */
async function manual(
  suite: Suite,
  user: string,
  transports: ("polling" | "websocket")[] = ["websocket"],
): Promise<Socket> {
  const socket = suite.clients.socket({
    auth: { token: suite.token(user) },
    transports,
    reconnection: false,
  });
  await connected(socket);
  return socket;
}

/**
 * After a reconnect that could not recover: `recovered === false`, connected, nothing
 * replayed; subscribing again works and only new events arrive after `before`.
 */
async function expectFreshSession(socket: Socket, feed: Feed, before: string[]): Promise<void> {
  expect(socket.recovered).toBe(false);
  expect(socket.connected).toBe(true);
  expect(await request<Reply>(socket, "herald:subscribe", feed.channel)).toMatchObject({
    ok: true,
  });
  await feed.publish("again");
  await feed.arrived("again");
  expect(feed.received).toEqual([...before, "again"]);
}

/** The recovery cases every target passes. */
export function recoveryCases(suite: Suite): void {
  const { current, token } = suite;

  /** `user`'s socket, subscribed to a fresh channel (herald:subscribe), with two events received. */
  const subscribed = async (user: string, transports?: ("polling" | "websocket")[]) => {
    const socket = await manual(suite, user, transports);
    const feed = new Feed(current(), fresh("org:acme:ch:recover"), socket);
    expect(await request<Reply>(socket, "herald:subscribe", feed.channel)).toMatchObject({
      ok: true,
    });
    await feed.publish("before 1");
    await feed.publish("before 2");
    await feed.arrived("before 2");
    return { socket, feed };
  };

  for (const transport of ["websocket", "polling"] as const) {
    it(`forced disconnect (4200) over ${transport}: recovered === true, exactly the missed events in order, then live ones on the same subscription`, async () => {
      const user = fresh("ada");
      const { socket, feed } = await subscribed(user, [transport]);
      expect(socket.io.engine.transport.name).toBe(transport);
      const resubscribed = record(socket, "herald:subscribed");

      await expectRecovered(current(), socket, user, feed, 4);
      expect(resubscribed).toEqual([]);
    });
  }

  it("a server-side subscription is recovered with its missed events", async () => {
    const user = fresh("ada");
    const socket = await manual(suite, user);
    const feed = new Feed(current(), fresh("org:acme:ch:pushed"), socket);
    const subscribedEvent = nextEvent<{ channel: string }>(socket, "herald:subscribed");
    await current().subscribe(user, feed.channel);
    expect(await subscribedEvent).toMatchObject({ channel: feed.channel });
    await feed.publish("before");
    await feed.arrived("before");
    const resubscribed = record(socket, "herald:subscribed");

    await expectRecovered(current(), socket, user, feed, 2);
    expect(resubscribed).toEqual([]);
  });

  it("recovered === false when the target lost the state: connected, nothing replayed, herald:subscribe works again", async (context) => {
    const loseState = current().loseState?.bind(current());
    if (!loseState) return context.skip("this target cannot lose its recovery state");
    const user = fresh("ada");
    const { socket, feed } = await subscribed(user);

    await drop(current(), socket, user);
    await loseState();
    await feed.publish("missed");
    await reconnect(socket);
    // A fresh session: the app subscribes again (and would refetch what it missed).
    await expectFreshSession(socket, feed, ["before 1", "before 2"]);
  });

  it("a forged pid or an unparseable offset: recovered === false, connected, nothing replayed", async () => {
    for (const tamper of [
      (state: { offset?: string }) => ({ pid: "forged", offset: state.offset }),
      (state: { pid?: string }) => ({ pid: state.pid, offset: "not an offset" }),
    ]) {
      const user = fresh("ada");
      const { socket, feed } = await subscribed(user);
      const state = recoveryState(socket);
      expect(state.pid).toEqual(expect.any(String));
      expect(state.offset).toEqual(expect.any(String));

      await drop(current(), socket, user);
      await feed.publish("missed");
      // The auth callback's fields win over the client's own pid and offset.
      socket.auth = (callback) => callback({ token: token(user), ...tamper(state) });
      await reconnect(socket);
      await expectFreshSession(socket, feed, ["before 1", "before 2"]);
    }
  });
}

/** Herald's own recovery cases: what the reference server does differently or not at all. */
export function heraldRecoveryCases(suite: Suite): void {
  const { current, clients, token } = suite;

  it("a pid and offset of another user: recovered === false, none of the other's channels or missed events", async () => {
    const [bobUser, adaUser] = [fresh("bob"), fresh("ada")];
    const bob = await manual(suite, bobUser);
    // A channel both may read: only the pid's binding to bob keeps ada out of his session.
    const channel = fresh("org:acme:ch:shared");
    const bobs = new Feed(current(), channel, bob);
    await request(bob, "herald:subscribe", channel);
    await bobs.publish("before");
    await bobs.arrived("before");
    const stolen = recoveryState(bob);
    expect(stolen.offset).toEqual(expect.any(String));
    await drop(current(), bob, bobUser);
    await bobs.publish("missed");

    const ada = clients.socket({
      auth: (callback) => callback({ token: token(adaUser), ...stolen }),
      reconnection: false,
    });
    const adas = new Feed(current(), channel, ada);
    await connected(ada);
    expect(recoveryState(ada).pid).not.toBe(stolen.pid);
    // Not in bob's channel: a marker on a channel of ada's own arrives, bob's event does not.
    const own = new Feed(current(), fresh("org:acme:ch:own"), ada);
    await request(ada, "herald:subscribe", own.channel);
    await adas.publish("not for ada");
    await own.publish("marker");
    await own.arrived("marker");
    expect(adas.received).toEqual([]);
  });

  it("a new token that no longer grants a channel: recovered === false, that channel not replayed", async () => {
    const user = fresh("ada");
    const socket = await manual(suite, user);
    const feed = new Feed(current(), fresh("org:acme:ch:revoked"), socket);
    await request(socket, "herald:subscribe", feed.channel);
    await feed.publish("before");
    await feed.arrived("before");

    await drop(current(), socket, user);
    await feed.publish("missed");
    // Still an org member, without the channel grant: the channel is re-authorised and refused.
    socket.auth = { token: mintToken(current().secret, { sub: user, channels: [] }) };
    const marker = nextEvent(socket, "marker");
    await reconnect(socket);
    expect(socket.recovered).toBe(false);
    expect(socket.connected).toBe(true);
    expect(await request<Reply>(socket, "herald:subscribe", "org:acme")).toMatchObject({
      ok: true,
    });
    await feed.publish("after");
    await current().publish("org:acme", "marker", {});
    await marker;
    expect(feed.received).toEqual(["before"]);
  });

  it("a channel held by a subscription token (no claim grants it) is recovered on the token's signed grant", async () => {
    const user = fresh("ada");
    const secret = current().secret;
    const socket = clients.socket({
      auth: { token: mintToken(secret, { sub: user, channels: [] }) },
      reconnection: false,
    });
    await connected(socket);
    const feed = new Feed(current(), fresh("org:acme:ch:private"), socket);
    const grant = { token: mintSubscriptionToken(secret, user, feed.channel) };
    expect(await request<Reply>(socket, "herald:subscribe", feed.channel, grant)).toMatchObject({
      ok: true,
    });
    await feed.publish("before");
    await feed.arrived("before");

    await expectRecovered(current(), socket, user, feed, 2);
  });

  it("more missed than history keeps, or more than a quarter of the queue budget: recovered === false, nothing replayed", async () => {
    for (const { count, size } of [
      // Past the 100 publications an org:<org>:… channel keeps.
      { count: 101, size: 0 },
      // 80 × 4 KB: within history, past a quarter of the 1 MiB queue budget.
      { count: 80, size: 4_000 },
    ]) {
      const user = fresh("ada");
      const socket = await manual(suite, user);
      const feed = new Feed(current(), fresh("org:acme:ch:overflow"), socket);
      await request(socket, "herald:subscribe", feed.channel);
      await feed.publish("before");
      await feed.arrived("before");

      await drop(current(), socket, user);
      const padding = "x".repeat(size);
      for (let n = 0; n < count; n++) {
        const text = `missed ${n}`;
        await current().publish(feed.channel, "message:new", {
          channel: feed.channel,
          text,
          padding,
        });
      }
      await reconnect(socket);
      await expectFreshSession(socket, feed, ["before"]);
    }
  });

  it("presence is not replayed: a join missed while down does not come after the recovery", async () => {
    const [adaUser, bobUser] = [fresh("ada"), fresh("bob")];
    const ada = await manual(suite, adaUser);
    const feed = new Feed(current(), fresh("org:acme:ch:room"), ada);
    await request(ada, "herald:subscribe", feed.channel);
    await feed.publish("before");
    await feed.arrived("before");
    const joins = record<{ user: string }>(ada, "herald:join");

    await drop(current(), ada, adaUser);
    const bob = await suite.connect(bobUser);
    expect(await request<Reply>(bob, "herald:subscribe", feed.channel)).toMatchObject({
      ok: true,
    });
    await feed.publish("missed");
    await reconnect(ada);
    expect(ada.recovered).toBe(true);
    await feed.publish("live");
    await feed.arrived("live");
    expect(feed.received).toEqual(["before", "missed", "live"]);
    expect(joins.map((join) => join.user)).not.toContain(bobUser);
  });

  it("a channel without history is subscribed again without replay (herald:subscribed, recoverable: false); recovered stays true", async () => {
    const user = fresh("ada");
    const socket = await manual(suite, user);
    const kept = new Feed(current(), fresh("org:acme:ch:kept"), socket);
    const plain = new Feed(current(), fresh("public:plain"), socket);
    for (const feed of [kept, plain]) {
      expect(await request<Reply>(socket, "herald:subscribe", feed.channel)).toMatchObject({
        ok: true,
      });
      await feed.publish("before");
      await feed.arrived("before");
    }
    const resubscribed = record<{ channel: string }>(socket, "herald:subscribed");

    await drop(current(), socket, user);
    await kept.publish("missed");
    await plain.publish("missed");
    const told = nextEvent<{ channel: string }>(socket, "herald:subscribed");
    await reconnect(socket);
    expect(socket.recovered).toBe(true);
    expect(await told).toMatchObject({
      channel: plain.channel,
      recoverable: false,
      recovered: false,
    });
    for (const feed of [kept, plain]) {
      await feed.publish("live");
      await feed.arrived("live");
    }
    expect(kept.received).toEqual(["before", "missed", "live"]);
    expect(plain.received).toEqual(["before", "live"]);
    expect(resubscribed.map((event) => event.channel)).toEqual([plain.channel]);
  });
}

/**
 * Across the nodes of `cluster`: dropped on node 0, missed events published on node 1, the
 * client reconnects through the proxy to node 1 and recovers; node 0's publications follow.
 * Over polling too: recovering needs no affinity, only a new session on any node.
 */
export function crossNodeCases(suite: Suite<ClusterTarget>): void {
  const { current } = suite;

  for (const transport of ["websocket", "polling"] as const) {
    it(`over ${transport}, dropped on one node, reconnected to the other: recovered === true, exactly the missed events, then live ones from both nodes`, async () => {
      const cluster = current();
      const [a, b] = cluster.nodes;
      const user = fresh("ada");
      const socket = await manual(suite, user, [transport]);
      const feed = new Feed(cluster, fresh("org:acme:ch:moved"), socket);
      await request(socket, "herald:subscribe", feed.channel);
      await feed.publish("before 1", a);
      await feed.publish("before 2", b);
      await feed.arrived("before 2");

      const reason = nextEvent<string>(socket, "disconnect");
      expect(await a.disconnect(user, 4200)).toBe(1);
      expect(await reason).toBe("transport close");
      for (let n = 1; n <= 3; n++) await feed.publish(`missed ${n}`, b);
      cluster.route(1);
      await reconnect(socket);
      expect(socket.recovered).toBe(true);
      await feed.publish("live from a", a);
      await feed.publish("live from b", b);
      await feed.arrived("live from b");
      expect(feed.received).toEqual(feed.sent);
      // It is node b that holds the connection now (Disconnect counts the node's own).
      expect(await b.disconnect(user, 4200)).toBe(1);
    });
  }

  it("the client's node crashes (SIGKILL): reconnected to the other node, recovered === true with the missed events", async () => {
    const cluster = current();
    const [a, b] = cluster.nodes;
    const user = fresh("ada");
    const socket = await manual(suite, user);
    const feed = new Feed(cluster, fresh("org:acme:ch:crash"), socket);
    await request(socket, "herald:subscribe", feed.channel);
    await feed.publish("before", b);
    await feed.arrived("before");

    const reason = nextEvent<string>(socket, "disconnect");
    await a.kill();
    try {
      expect(await reason).toBe("transport close");
      await feed.publish("missed 1", b);
      await feed.publish("missed 2", b);
      cluster.route(1);
      await reconnect(socket);
      expect(socket.recovered).toBe(true);
      await feed.publish("live", b);
      await feed.arrived("live");
      expect(feed.received).toEqual(feed.sent);
    } finally {
      // Back for the next case (same ports and keys).
      await a.start();
    }
  });
}
