/**
 * The reference: the real `socket.io` npm server, in process, implementing the contract Herald
 * implements, so the suite is known to test the protocol and not Herald's reading of it.
 * - Auth: a JWT in `auth.token` (or `Authorization: Bearer`), Herald's rules; a refusal is
 *   CONNECT_ERROR `{message, data: {code}}` with Herald's code (101 invalid, 109 expired).
 * - `herald:subscribe` (channel) / `herald:unsubscribe` (channel): rooms, acked `{ok: true}`
 *   or `{error: {code, message}}`.
 * - Any other event goes to the backend (method = event, data = first argument); its reply
 *   is the ack's argument.
 * - Publications are events named by the publication's event, to the channel's room.
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

function tokenOf(socket: Socket): unknown {
  const auth = socket.handshake.auth as { token?: unknown };
  if (auth.token !== undefined) return auth.token;
  const header = socket.handshake.headers.authorization;
  return header?.startsWith("Bearer ") ? header.slice("Bearer ".length) : undefined;
}

/** What the reference answers to one client event (the ack's argument). */
function handle(socket: Socket, backend: Backend, event: string, args: unknown[]): unknown {
  const claims = socket.data as Claims;
  const [first] = args;
  switch (event) {
    case "herald:subscribe": {
      if (typeof first !== "string") return BAD_REQUEST;
      const refusal = subscribeRefusal(claims, first);
      if (refusal) return { error: refusal };
      if (socket.rooms.has(first)) return ALREADY_SUBSCRIBED;
      void socket.join(first);
      return { ok: true };
    }
    case "herald:unsubscribe":
      if (typeof first !== "string") return BAD_REQUEST;
      void socket.leave(first);
      return { ok: true };
    default: {
      const reply = backend.rpc({ user: claims.sub, method: event, data: first ?? null });
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
  });
  io.use((socket, next) => {
    const verdict = verifyToken(tokenOf(socket), secret);
    if ("code" in verdict) {
      next(Object.assign(new Error(verdict.message), { data: { code: verdict.code } }));
      return;
    }
    Object.assign(socket.data as object, verdict);
    next();
  });
  io.on("connection", (socket) => {
    socket.onAny((event: string, ...args: unknown[]) => {
      const last = args.at(-1);
      const ack = typeof last === "function" ? (args.pop() as (reply: unknown) => void) : null;
      const reply = handle(socket, backend, event, args);
      ack?.(reply);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address() as AddressInfo;
  const socketsOf = (user: string) =>
    [...io.of("/").sockets.values()].filter((socket) => (socket.data as Claims).sub === user);

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
        await socket.join(channel);
        socket.emit("herald:subscribed", { channel });
      }
    },
    stop: () => io.close(),
  };
}
