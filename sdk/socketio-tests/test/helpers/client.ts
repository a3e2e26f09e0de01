/** The real socket.io-client as an app uses it, with bounded waits on what it reports. */
import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";
import { waitFor } from "../../../typescript/test/helpers/wait.js";
import type { Target } from "./target.js";

export { waitFor };

/** Ack of `herald:subscribe` / `herald:unsubscribe`. */
export interface Reply {
  ok?: boolean;
  error?: { code: number; message: string };
}

let unique = 0;
/** A name no other case uses, so cases share a target without seeing each other. */
export const fresh = (prefix: string) => `${prefix}${++unique}`;

/** A CONNECT_ERROR as socket.io-client reports it. */
export type ConnectError = Error & { data?: { code?: number } };

/** Opens sockets on one target and closes all of them after each test. */
export class Clients {
  private readonly open: Socket[] = [];

  constructor(private readonly target: () => Target) {}

  /**
   * A socket to namespace `nsp` over the WebSocket transport only, with fast reconnects;
   * `options` as an app passes them (`auth`, `extraHeaders`…).
   */
  socket(options: Partial<ManagerOptions & SocketOptions> = {}, nsp = "/"): Socket {
    const socket = io(this.target().url + nsp, {
      transports: ["websocket"],
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      ...options,
    });
    this.open.push(socket);
    return socket;
  }

  closeAll(): void {
    for (const socket of this.open.splice(0)) socket.disconnect();
  }
}

/** Resolves when `socket` is connected; rejects on connect_error (with the error) or after 10 s. */
export function connected(socket: Socket): Promise<void> {
  if (socket.connected) return Promise.resolve();
  return outcome(socket).then((error) => {
    if (error) throw error;
  });
}

/** Resolves with the connect_error `socket` gets; rejects if it connects instead, or after 10 s. */
export async function connectError(socket: Socket): Promise<ConnectError> {
  const error = await outcome(socket);
  if (!error) throw new Error("connected where a connect_error was expected");
  return error;
}

/** The next connect (null) or connect_error of `socket`. */
function outcome(socket: Socket): Promise<ConnectError | null> {
  return waitFor<ConnectError | null>("connect or connect_error", (callback) => {
    const onConnect = () => callback(null);
    const onError = (error: ConnectError) => callback(error);
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
    return () => {
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
  });
}

/** The first argument of the next `event` on `socket` (bounded). */
export function nextEvent<T>(socket: Socket, event: string): Promise<T> {
  return waitFor<T>(`event ${event}`, (callback) => {
    socket.on(event, callback);
    return () => socket.off(event, callback);
  });
}

/** Emits `event` with `args` and resolves with the ack's argument (rejects after 10 s). */
export function request<T>(socket: Socket, event: string, ...args: unknown[]): Promise<T> {
  return socket.timeout(10_000).emitWithAck(event, ...args) as Promise<T>;
}
