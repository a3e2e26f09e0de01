/**
 * One browser context's network, as a TCP proxy in front of the gateway that can be cut:
 * `down()` destroys every open connection (the page's WebSocket sees its TCP connection die,
 * as when Wi-Fi drops) and refuses new ones until `up()`. Chromium's offline emulation
 * (`context.setOffline`) alone does not do this: it holds an open WebSocket's incoming
 * frames, close frame included, until the emulation ends, so the page would not notice.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface Network {
  /** `http://127.0.0.1:<port>`: the gateway, through this network. */
  readonly url: string;
  down(): void;
  up(): void;
  close(): Promise<void>;
}

/** A network to the gateway at `target` (`host:port`). */
export async function proxyNetwork(target: string): Promise<Network> {
  const [host, port] = target.split(":") as [string, string];
  const sockets = new Set<Socket>();
  let connected = true;
  const server: Server = createServer((client) => {
    if (!connected) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host, port: Number(port) });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const listening = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${listening}`,
    down() {
      connected = false;
      for (const socket of sockets) socket.destroy();
    },
    up() {
      connected = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        connected = false;
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
