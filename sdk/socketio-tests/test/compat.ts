/**
 * The Socket.IO compatibility suite, one definition for every target: the reference
 * `socket.io` server (reference.test.ts) and Herald (herald.test.ts). A case counts only when
 * the reference passes it. The WebSocket transport, HTTP long-polling and the upgrade,
 * connection state recovery (recovery.ts).
 */
import { describe, expect, it } from "vitest";
import type { BackendCall } from "./helpers/backend.js";
import {
  connectError,
  connected,
  fresh,
  nextEvent,
  request,
  waitFor,
  type Reply,
} from "./helpers/client.js";
import { suiteOn, type Suite } from "./helpers/suite.js";
import { HEARTBEAT, type Target } from "./helpers/target.js";
import { mintToken, PERMISSION_DENIED, TOKEN_EXPIRED, UNAUTHORIZED } from "./helpers/token.js";
import { recoveryCases } from "./recovery.js";

/**
 * Registers the suite against the target `start` brings up (once for the file); answers its
 * handles, for a target's own cases beside it.
 */
export function compatSuite(start: () => Promise<Target>): Suite {
  const suite = suiteOn(start);
  const { current, clients, token, connect } = suite;

  describe("WebSocket transport", () => {
    describe("auth", () => {
      it("accepts a token in auth.token; the socket gets an id", async () => {
        const socket = await connect(fresh("ada"));
        expect(socket.connected).toBe(true);
        expect(socket.id).toEqual(expect.any(String));
        expect(socket.id).not.toBe("");
      });

      it("accepts the auth callback form", async () => {
        const user = fresh("ada");
        const socket = clients.socket({
          auth: (callback) => callback({ token: token(user) }),
        });
        await connected(socket);
      });

      it("accepts a token in the Authorization header", async () => {
        const socket = clients.socket({
          extraHeaders: { authorization: `Bearer ${token(fresh("ada"))}` },
        });
        await connected(socket);
      });

      it("accepts a token in the query (?token=)", async () => {
        const socket = clients.socket({ query: { token: token(fresh("ada")) } });
        await connected(socket);
      });

      it("refuses an invalid token with connect_error code 101", async () => {
        const forged = mintToken("not-the-secret", { sub: fresh("eve") });
        const error = await connectError(clients.socket({ auth: { token: forged } }));
        expect(error.message).toEqual(expect.any(String));
        expect(error.data?.code).toBe(UNAUTHORIZED);
      });

      it("refuses a missing token with code 101", async () => {
        const error = await connectError(clients.socket());
        expect(error.data?.code).toBe(UNAUTHORIZED);
      });

      it("tells an expired token (109) from an invalid one; a fresh token then connects", async () => {
        const user = fresh("ada");
        const socket = clients.socket({ auth: { token: token(user, -600) } });
        const error = await connectError(socket);
        expect(error.data?.code).toBe(TOKEN_EXPIRED);
        expect(error.message).not.toBe("");
        // The app's refresh-and-retry: a new token, then connect again.
        socket.auth = { token: token(user) };
        socket.connect();
        await connected(socket);
      });

      it("refuses another namespace", async () => {
        const socket = clients.socket({ auth: { token: token(fresh("ada")) } }, "/admin");
        const error = await connectError(socket);
        expect(error.message).toBe("Invalid namespace");
      });
    });

    describe("channels", () => {
      it("herald:subscribe acks ok; a publication arrives as its event with its data", async () => {
        const channel = fresh("org:acme:ch:general");
        const socket = await connect(fresh("ada"));
        expect(await request<Reply>(socket, "herald:subscribe", channel)).toMatchObject({
          ok: true,
        });
        const received = nextEvent<unknown>(socket, "message:new");
        await current().publish(channel, "message:new", { text: "hi", n: 1 });
        expect(await received).toEqual({ text: "hi", n: 1 });
      });

      it("publications arrive in order, with any JSON data and event name as published", async () => {
        const channel = fresh("org:acme:ch:kinds");
        const socket = await connect(fresh("ada"));
        await request(socket, "herald:subscribe", channel);
        const published: [string, unknown][] = [
          ["message.created", { text: 'line\nbreak, "quotes", é, 😀', nested: { a: [1, null] } }],
          ["n", 42],
          ["s", "plain string"],
          ["list", [1, "two", { three: 3 }]],
          ["nothing", null],
          ["yes", true],
          ["ünïcödé event", { ok: 1 }],
        ];
        for (let n = 0; n < 20; n++) published.push(["seq", n]);
        const received: [string, unknown][] = [];
        const all = waitFor<number>(
          `${published.length} publications`,
          (callback) => {
            const listener = (event: string, data: unknown) => {
              received.push([event, data]);
              callback(received.length);
            };
            socket.onAny(listener);
            return () => socket.offAny(listener);
          },
          (count) => count >= published.length,
        );
        for (const [event, data] of published) await current().publish(channel, event, data);
        await all;
        expect(received).toEqual(published);
      });

      it("a publication reaches every subscriber, and only them", async () => {
        const [channel, elsewhere] = [fresh("org:acme:ch:fanout"), fresh("org:acme:ch:other")];
        const ada = await connect(fresh("ada"));
        const bob = await connect(fresh("bob"));
        const eve = await connect(fresh("eve"));
        const outsider: string[] = [];
        // Reserved `herald:` events (Herald's `herald:offset`) are not publications.
        eve.onAny((event: string) => {
          if (!event.startsWith("herald:")) outsider.push(event);
        });
        await request(ada, "herald:subscribe", channel);
        await request(bob, "herald:subscribe", channel);
        await request(eve, "herald:subscribe", elsewhere);
        const received = [ada, bob].map((socket) => nextEvent(socket, "message:new"));
        await current().publish(channel, "message:new", { text: "all" });
        expect(await Promise.all(received)).toEqual([{ text: "all" }, { text: "all" }]);
        const marker = nextEvent(eve, "marker");
        await current().publish(elsewhere, "marker", {});
        await marker;
        expect(outsider).toEqual(["marker"]);
      });

      it("herald:subscribe to a channel the token does not allow acks error 103", async () => {
        const socket = await connect(fresh("ada"));
        const reply = await request<Reply>(socket, "herald:subscribe", "org:globex:ch:secret");
        expect(reply.ok).toBeUndefined();
        expect(reply.error).toMatchObject({ code: PERMISSION_DENIED, message: expect.any(String) });
      });

      it("after herald:unsubscribe the channel's publications stop", async () => {
        const [left, kept] = [fresh("org:acme:ch:left"), fresh("org:acme:ch:kept")];
        const socket = await connect(fresh("ada"));
        const seen: string[] = [];
        socket.onAny((event: string) => seen.push(event));
        await request(socket, "herald:subscribe", left);
        await request(socket, "herald:subscribe", kept);
        expect(await request<Reply>(socket, "herald:unsubscribe", left)).toMatchObject({
          ok: true,
        });
        const marker = nextEvent(socket, "marker");
        await current().publish(left, "gone", {});
        await current().publish(kept, "marker", {});
        await marker;
        expect(seen).not.toContain("gone");
      });

      it("a server-side subscription: herald:subscribed, its publications, herald:unsubscribed (2000)", async () => {
        const user = fresh("ada");
        const [channel, other] = [fresh("org:acme:ch:server"), fresh("org:acme:ch:mine")];
        const socket = await connect(user);
        const seen: string[] = [];
        socket.onAny((event: string) => seen.push(event));
        await request(socket, "herald:subscribe", other);
        const subscribed = nextEvent<{ channel: string }>(socket, "herald:subscribed");
        await current().subscribe(user, channel);
        expect(await subscribed).toMatchObject({ channel });
        const received = nextEvent(socket, "message:new");
        await current().publish(channel, "message:new", { text: "pushed" });
        expect(await received).toEqual({ text: "pushed" });

        const unsubscribed = nextEvent(socket, "herald:unsubscribed");
        await current().unsubscribe(user, channel);
        expect(await unsubscribed).toMatchObject({ channel, code: 2000 });
        const marker = nextEvent(socket, "marker");
        await current().publish(channel, "gone", {});
        await current().publish(other, "marker", {});
        await marker;
        expect(seen).not.toContain("gone");
      });
    });

    describe("presence as reserved events", () => {
      it("another subscriber's arrival and departure come as herald:join and herald:leave", async () => {
        const channel = fresh("org:acme:ch:room");
        const [adaUser, bobUser] = [fresh("ada"), fresh("bob")];
        const ada = await connect(adaUser);
        const bob = await connect(bobUser);
        await request(ada, "herald:subscribe", channel);
        const joined = nextEvent(ada, "herald:join");
        await request(bob, "herald:subscribe", channel);
        const entry = { channel, user: bobUser, client: bob.id, info: { name: bobUser } };
        expect(await joined).toMatchObject(entry);
        const left = nextEvent(ada, "herald:leave");
        await request(bob, "herald:unsubscribe", channel);
        expect(await left).toMatchObject(entry);
        // A closed connection leaves too.
        await request(bob, "herald:subscribe", channel);
        const leftOnClose = waitFor<{ user: string }>(
          "bob's leave on close",
          (callback) => {
            ada.on("herald:leave", callback);
            return () => ada.off("herald:leave", callback);
          },
          (leave) => leave.user === bobUser,
        );
        bob.disconnect();
        expect(await leftOnClose).toMatchObject({ channel, user: bobUser });
      });

      it("a member's first connection and last close come as herald:status on org:<org>", async () => {
        const bobUser = fresh("bob");
        const ada = await connect(fresh("ada"));
        await request(ada, "herald:subscribe", "org:acme");
        const statusOf = (status: string) =>
          waitFor<{ user: string; status: string }>(
            `bob ${status}`,
            (callback) => {
              ada.on("herald:status", callback);
              return () => ada.off("herald:status", callback);
            },
            (event) => event.user === bobUser && event.status === status,
          );
        const online = statusOf("online");
        const bob = await connect(bobUser);
        expect(await online).toMatchObject({ channel: "org:acme", user: bobUser });
        const offline = statusOf("offline");
        bob.disconnect();
        expect(await offline).toMatchObject({ channel: "org:acme", user: bobUser });
      });
    });

    describe("events to the app's backend", () => {
      it("emitWithAck gets the backend's reply, with the caller's identity", async () => {
        const user = fresh("ada");
        const socket = await connect(user);
        const reply = await request(socket, "echo", { n: 1, text: "hé" });
        expect(reply).toEqual({ user, data: { n: 1, text: "hé" } });
      });

      it("a backend refusal is the ack's {error: {code, message}}", async () => {
        const socket = await connect(fresh("ada"));
        expect(await request(socket, "fail", { text: "" })).toEqual({
          error: { code: 1422, message: "text is empty" },
        });
      });

      it("a backend reply of null is the ack's null", async () => {
        const socket = await connect(fresh("ada"));
        expect(await request(socket, "noop")).toBeNull();
      });

      it("an event without an ack still reaches the backend, with its first argument", async () => {
        const user = fresh("ada");
        const socket = await connect(user);
        const call = waitFor<BackendCall>(
          "the backend call",
          (callback) => current().backend.onCall(callback),
          (seen) => seen.user === user,
        );
        socket.emit("typing:start", { room: "general" }, "ignored");
        expect(await call).toEqual({ user, method: "typing:start", data: { room: "general" } });
      });
    });

    describe("heartbeat", () => {
      it("answers the server's pings in time: the session outlives several", async () => {
        const socket = await connect(fresh("ada"));
        const id = socket.id;
        // Past the first ping's pong deadline on either side, with room for a late sweep.
        const enough = 4;
        let pings = 0;
        // Resolves with the ping count once it is enough, or with the reason of a drop.
        const outcome = await waitFor<number | string>(
          `${enough} pings`,
          (callback) => {
            const onPing = () => callback(++pings);
            const onDisconnect = (reason: string) => callback(reason);
            socket.io.engine.on("ping", onPing);
            socket.on("disconnect", onDisconnect);
            return () => {
              socket.io.engine.off("ping", onPing);
              socket.off("disconnect", onDisconnect);
            };
          },
          (value) => typeof value === "string" || value >= enough,
          // A node's pings come from a periodic sweep, so some come late; bound it loosely.
          enough * HEARTBEAT.intervalSeconds * 3_000,
        );
        expect(outcome).toBe(enough);
        expect(socket.id).toBe(id);
      });
    });

    describe("forced disconnect", () => {
      it("a reconnect-now close (4200) makes the client reconnect on its own", async () => {
        const user = fresh("ada");
        const socket = await connect(user);
        const firstId = socket.id;
        const reason = nextEvent<string>(socket, "disconnect");
        const reconnected = waitFor("the reconnect", (callback) => {
          socket.io.on("reconnect", callback);
          return () => socket.io.off("reconnect", callback);
        });
        expect(await current().disconnect(user, 4200)).toBe(1);
        expect(await reason).toBe("transport close");
        await reconnected;
        await connected(socket);
        expect(socket.id).not.toBe(firstId);
        expect(socket.recovered).toBeFalsy();
        // Nothing is recovered yet: the app subscribes again.
        const channel = fresh("org:acme:ch:again");
        expect(await request<Reply>(socket, "herald:subscribe", channel)).toMatchObject({
          ok: true,
        });
        const received = nextEvent(socket, "message:new");
        await current().publish(channel, "message:new", { text: "back" });
        expect(await received).toEqual({ text: "back" });
      });

      it("a do-not-reconnect close (4001) is a Socket.IO DISCONNECT: the client stays down", async () => {
        const user = fresh("ada");
        const socket = await connect(user);
        const reason = nextEvent<string>(socket, "disconnect");
        expect(await current().disconnect(user, 4001)).toBe(1);
        expect(await reason).toBe("io server disconnect");
        expect(socket.active).toBe(false);
      });
    });
  });

  describe("HTTP long-polling", () => {
    /** A connected socket of `user` over `transports`. */
    const connectOver = async (user: string, transports: ("polling" | "websocket")[]) => {
      const socket = clients.socket({ auth: { token: token(user) }, transports });
      await connected(socket);
      return socket;
    };

    it("polling-only: connect, subscribe, receive, emitWithAck", async () => {
      const user = fresh("ada");
      const channel = fresh("org:acme:ch:polled");
      const socket = await connectOver(user, ["polling"]);
      expect(socket.io.engine.transport.name).toBe("polling");
      expect(await request<Reply>(socket, "herald:subscribe", channel)).toMatchObject({
        ok: true,
      });
      const received = nextEvent<unknown>(socket, "message:new");
      await current().publish(channel, "message:new", { text: "hi" });
      expect(await received).toEqual({ text: "hi" });
      expect(await request(socket, "echo", { n: 1 })).toEqual({ user, data: { n: 1 } });
      expect(socket.io.engine.transport.name).toBe("polling");
    });

    it("polling with the upgrade to WebSocket (2probe / 3probe / 5): nothing lost or repeated", async () => {
      const user = fresh("ada");
      const channel = fresh("org:acme:ch:upgraded");
      const socket = clients.socket({
        auth: { token: token(user) },
        transports: ["polling", "websocket"],
      });
      // The manager opens its engine at once; the client probes as soon as it is open.
      const engine = socket.io.engine;
      expect(engine.transport.name).toBe("polling");
      let switched = false;
      const upgraded = waitFor<void>("the upgrade", (callback) => {
        const onUpgrade = () => {
          switched = true;
          callback();
        };
        engine.on("upgrade", onUpgrade);
        return () => engine.off("upgrade", onUpgrade);
      });
      await connected(socket);
      const texts: string[] = [];
      socket.on("message:new", (data: { text: string }) => texts.push(data.text));
      expect(await request<Reply>(socket, "herald:subscribe", channel)).toMatchObject({
        ok: true,
      });
      // Published until the transports have switched (if they have not yet), and after.
      const sent: string[] = [];
      const publish = async () => {
        const text = `m${sent.length}`;
        sent.push(text);
        await current().publish(channel, "message:new", { text });
      };
      while (!switched && sent.length < 100) await publish();
      await upgraded;
      expect(engine.transport.name).toBe("websocket");
      for (let n = 0; n < 5; n++) await publish();
      await waitFor<void>("every publication", (callback) => {
        const check = () => {
          if (texts.length >= sent.length) callback();
        };
        socket.on("message:new", check);
        check();
        return () => socket.off("message:new", check);
      });
      expect(texts).toEqual(sent);
      expect(await request(socket, "echo", { n: 2 })).toEqual({ user, data: { n: 2 } });
    });
  });

  describe("connection state recovery", () => recoveryCases(suite));
  return suite;
}
