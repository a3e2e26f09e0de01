/**
 * The reference: the real `socket.io` npm server, in process, implementing the contract Herald
 * implements, so the suite is known to test the protocol and not Herald's reading of it.
 * - Auth: a JWT in `auth.token` (or `Authorization: Bearer`, or `?token=`), Herald's rules;
 *   a refusal is CONNECT_ERROR `{message, data: {code}}` with Herald's code (101 invalid,
 *   109 expired).
 * - `herald:subscribe` (channel) / `herald:unsubscribe` (channel): rooms, acked `{ok: true}`
 *   or `{error: {code, message}}`.
 * - Any other event goes to the backend (method = event, data = first argument); its reply
 *   is the ack's argument.
 * - Publications are events named by the publication's event, to the channel's room.
 * - Presence as Herald's default namespaces have it: `herald:join` / `herald:leave` to the
 *   other subscribers of an `org:<org>:…` channel; `herald:status` online / offline to the
 *   subscribers of `org:<org>` when a member's first connection opens or last one closes.
 * - The app's services: publish, server-side subscribe / unsubscribe (`herald:subscribed`,
 *   `herald:unsubscribed` with code 2000), and disconnect by close code: 41xx and 42xx drop
 *   the transport (the client reconnects), 40xx is a Socket.IO DISCONNECT (it does not).
 * - Connection state recovery: socket.io's own `connectionStateRecovery` (pid, offsets, the
 *   missed packets, the socket's rooms). Its offsets are its own: it stores every emit,
 *   reserved events too, where Herald gives offsets to publications only; the suite never
 *   looks inside offsets. A recovering CONNECT goes through the token check again, as
 *   Herald re-authorises, and keeps the session's subscriptions.
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Server, type Socket } from "socket.io";
import { createBackend, type Backend } from "./backend.js";
import { HEARTBEAT, type Target } from "./target.js";
import { subscribeRefusal, verifyToken, type Claims } from "./token.js";

const BAD_REQUEST = { error: { code: 107, message: "bad request" } };
const ALREADY_SUBSCRIBED = { error: { code: 105, message: "already subscribed" } };

/** What the reference keeps per socket (in `socket.data`). */
interface Session {
  claims: Claims;
  /** When the socket joined each channel it is subscribed to, for presence entries. */
  joined: Map<string, number>;
}

const sessionOf = (socket: Socket) => socket.data as Session;

function tokenOf(socket: Socket): unknown {
  const auth = socket.handshake.auth as { token?: unknown };
  if (auth.token !== undefined) return auth.token;
  const header = socket.handshake.headers.authorization;
  if (header?.startsWith("Bearer ")) return header.slice("Bearer ".length);
  return socket.handshake.query["token"];
}

/** Channels whose subscribers see each other join and leave: `org:<org>:…`. */
const hasJoinLeave = (channel: string) =>
  channel.startsWith("org:") && channel.split(":").length > 2;

/** The presence entry of `socket` on `channel`, as `herald:join` / `herald:leave` carry it. */
function member(socket: Socket, channel: string) {
  const { claims, joined } = sessionOf(socket);
  return {
    channel,
    user: claims.sub,
    client: socket.id,
    info: claims.info,
    joinedAt: joined.get(channel),
  };
}

/** Subscribes `socket` to `channel`, telling the others there; false when it already was. */
function join(socket: Socket, channel: string): boolean {
  const { joined } = sessionOf(socket);
  if (joined.has(channel)) return false;
  joined.set(channel, Date.now());
  void socket.join(channel);
  if (hasJoinLeave(channel)) socket.to(channel).emit("herald:join", member(socket, channel));
  return true;
}

/** A client's `herald:subscribe`, checked against its token. */
function subscribe(socket: Socket, channel: unknown): unknown {
  if (typeof channel !== "string") return BAD_REQUEST;
  const refusal = subscribeRefusal(sessionOf(socket).claims, channel);
  if (refusal) return { error: refusal };
  return join(socket, channel) ? { ok: true } : ALREADY_SUBSCRIBED;
}

function unsubscribe(socket: Socket, channel: string): void {
  if (!sessionOf(socket).joined.has(channel)) return;
  if (hasJoinLeave(channel)) socket.to(channel).emit("herald:leave", member(socket, channel));
  sessionOf(socket).joined.delete(channel);
  void socket.leave(channel);
}

/** What the reference answers to one client event (the ack's argument). */
function handle(socket: Socket, backend: Backend, event: string, args: unknown[]): unknown {
  const [first] = args;
  switch (event) {
    case "herald:subscribe":
      return subscribe(socket, first);
    case "herald:unsubscribe":
      if (typeof first !== "string") return BAD_REQUEST;
      unsubscribe(socket, first);
      return { ok: true };
    default: {
      const user = sessionOf(socket).claims.sub;
      const reply = backend.rpc({ user, method: event, data: first ?? null });
      return reply.error ? { error: reply.error } : (reply.data ?? null);
    }
  }
}

/** Starts the reference server on a free loopback port. */
export async function startReference(): Promise<Target> {
  const secret = randomBytes(24).toString("hex");
  const backend = createBackend();
  const http = createServer();
  const io = new Server(http, {
    serveClient: false,
    pingInterval: HEARTBEAT.intervalSeconds * 1000,
    pingTimeout: HEARTBEAT.timeoutSeconds * 1000,
    connectionStateRecovery: { skipMiddlewares: false },
  });
  const socketsOf = (user: string) =>
    [...io.of("/").sockets.values()].filter((socket) => sessionOf(socket).claims.sub === user);
  /** Tells each of the user's orgs that the user is now `status`. */
  const announce = (claims: Claims, status: "online" | "offline") => {
    for (const org of claims.orgs) {
      const channel = `org:${org}`;
      const lastSeen = status === "offline" ? { lastSeen: Date.now() } : {};
      io.to(channel).emit("herald:status", { channel, user: claims.sub, status, ...lastSeen });
    }
  };

  io.use((socket, next) => {
    const verdict = verifyToken(tokenOf(socket), secret);
    if ("code" in verdict) {
      next(Object.assign(new Error(verdict.message), { data: { code: verdict.code } }));
      return;
    }
    // A recovered socket got its `socket.data` back with its rooms: it keeps its channels.
    const joined = socket.recovered ? sessionOf(socket).joined : new Map<string, number>();
    const session: Session = { claims: verdict, joined };
    Object.assign(socket.data as object, session);
    next();
  });
  io.on("connection", (socket) => {
    const { claims, joined } = sessionOf(socket);
    if (socketsOf(claims.sub).length === 1) announce(claims, "online");
    // Back in its channels' presence, as on a fresh subscribe.
    if (socket.recovered) {
      for (const channel of joined.keys()) {
        joined.set(channel, Date.now());
        if (hasJoinLeave(channel)) socket.to(channel).emit("herald:join", member(socket, channel));
      }
    }
    socket.onAny((event: string, ...args: unknown[]) => {
      const last = args.at(-1);
      const ack = typeof last === "function" ? (args.pop() as (reply: unknown) => void) : null;
      const reply = handle(socket, backend, event, args);
      ack?.(reply);
    });
    socket.on("disconnecting", () => {
      // The others see it leave; its channels stay in its session, which socket.io keeps
      // (with the rooms, left after this) for a recovery.
      for (const channel of sessionOf(socket).joined.keys()) {
        if (hasJoinLeave(channel)) socket.to(channel).emit("herald:leave", member(socket, channel));
      }
    });
    socket.on("disconnect", () => {
      if (socketsOf(claims.sub).length === 0) announce(claims, "offline");
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    secret,
    backend,
    publish: async (channel, event, data) => {
      io.to(channel).emit(event, data);
    },
    disconnect: async (user, code) => {
      const sockets = socketsOf(user);
      for (const socket of sockets) {
        // Herald's 41xx and 42xx classes tell the client to reconnect: drop the transport,
        // which socket.io-client reconnects after; a Socket.IO DISCONNECT would stop it.
        if (code >= 4100) socket.conn.close();
        else socket.disconnect(true);
      }
      return sockets.length;
    },
    subscribe: async (user, channel) => {
      for (const socket of socketsOf(user)) {
        if (join(socket, channel)) socket.emit("herald:subscribed", { channel });
      }
    },
    unsubscribe: async (user, channel) => {
      for (const socket of socketsOf(user)) {
        if (!sessionOf(socket).joined.has(channel)) continue;
        unsubscribe(socket, channel);
        socket.emit("herald:unsubscribed", {
          channel,
          code: 2000,
          reason: "unsubscribed by the server",
        });
      }
    },
    loseState: async () => {
      // socket.io-adapter's in-memory session store (a private field): what a restart loses.
      (io.of("/").adapter as unknown as { sessions: Map<string, unknown> }).sessions.clear();
    },
    stop: () => io.close(),
  };
}
