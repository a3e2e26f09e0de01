/** What every case of a suite uses: its target, started once for the file, and its clients. */
import { afterAll, afterEach, beforeAll } from "vitest";
import type { Socket } from "socket.io-client";
import { Clients, connected } from "./client.js";
import type { Target } from "./target.js";
import { mintToken } from "./token.js";

export interface Suite<T extends Target = Target> {
  /** The target (throws before it started). */
  current(): T;
  /** The case's sockets, all closed after each case. */
  readonly clients: Clients;
  /** A valid connection token of `sub` (its default claims: org acme, `org:acme:*`). */
  token(sub: string, ttlSeconds?: number): string;
  /** A connected socket of `user` with a valid token in `auth`. */
  connect(user: string): Promise<Socket>;
}

/** Registers the hooks that start the target `start` brings up (once for the file) and stop it. */
export function suiteOn<T extends Target>(start: () => Promise<T>): Suite<T> {
  let target: T | undefined;
  const current = () => {
    if (!target) throw new Error("the target did not start");
    return target;
  };
  const clients = new Clients(current);
  const token = (sub: string, ttlSeconds?: number) =>
    mintToken(current().secret, { sub, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) });
  beforeAll(async () => {
    target = await start();
  });
  afterEach(() => clients.closeAll());
  afterAll(() => target?.stop());
  return {
    current,
    clients,
    token,
    connect: async (user) => {
      const socket = clients.socket({ auth: { token: token(user) } });
      await connected(socket);
      return socket;
    },
  };
}
