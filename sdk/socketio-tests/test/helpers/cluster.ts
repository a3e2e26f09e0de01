/**
 * What a two-node Herald cluster test needs beside the nodes: real `nats-server` and
 * `redis-server` processes on free loopback ports (killed by `stop`), Redis commands over a
 * plain socket, and a TCP proxy the test points at one node or the other, as a load
 * balancer would move a client.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../../typescript/test/helpers/gateway.js";
import { waitFor } from "./client.js";

/**
 * `start()`, again (up to three times in all) when it failed on a port taken between the
 * free-port probe and the server's bind: outgoing connections (the suite's files run in
 * parallel) take ports from the same ephemeral range.
 */
export async function retryPortClash<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (error) {
      const clash = error instanceof Error && /address already in use/i.test(error.message);
      if (!clash || attempt === 3) throw error;
    }
  }
}

/** A server process of the test's own. */
export interface ServerProcess {
  readonly port: number;
  readonly url: string;
  /** Kills it (SIGKILL) and removes its directory. */
  stop(): Promise<void>;
}

/**
 * Starts `command` with `args(port)` on a free port in a directory of its own and resolves
 * once it has printed `ready` (bounded); fails with its output when it exits first.
 */
async function startServer(
  command: string,
  scheme: string,
  args: (port: number, dir: string) => string[],
  ready: string,
): Promise<ServerProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `herald-sio-${command}-`));
  const child = spawn(command, args(port, dir), { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor<string | null>(`${command} to print "${ready}"`, (callback) => {
      const onOutput = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes(ready)) callback(null);
      };
      const onExit = (code: number | null) => callback(`exited (${code})`);
      const onError = (error: Error) => callback(error.message);
      child.stdout.on("data", onOutput);
      child.stderr.on("data", onOutput);
      child.once("exit", onExit);
      child.once("error", onError);
      return () => {
        child.stdout.off("data", onOutput);
        child.stderr.off("data", onOutput);
        child.off("exit", onExit);
        child.off("error", onError);
      };
    }).then((failure) => {
      if (failure !== null) {
        throw new Error(`${command} ${failure}${output === "" ? "" : `:\n${output}`}`);
      }
    });
  } catch (error) {
    await stop();
    throw error;
  }
  // The pipes are no longer read: let the process write without filling them.
  child.stdout.resume();
  child.stderr.resume();
  return { port, url: `${scheme}://127.0.0.1:${port}`, stop };
}

export function startNats(): Promise<ServerProcess> {
  return startServer(
    "nats-server",
    "nats",
    (port) => ["-a", "127.0.0.1", "-p", String(port)],
    "Server is ready",
  );
}

/** A `redis-server` without persistence, so a flush loses everything. */
export function startRedis(): Promise<ServerProcess> {
  return startServer(
    "redis-server",
    "redis",
    (port, dir) => [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    "Ready to accept connections",
  );
}

/** Sends one command (RESP) to Redis on `port` and resolves with its first reply line. */
export async function redisCommand(port: number, ...args: string[]): Promise<string> {
  const socket = createConnection(port, "127.0.0.1");
  try {
    const request = [
      `*${args.length}`,
      ...args.flatMap((arg) => [`$${Buffer.byteLength(arg)}`, arg]),
    ];
    socket.write(`${request.join("\r\n")}\r\n`);
    let reply = "";
    return await waitFor<string>(`Redis's reply to ${args.join(" ")}`, (callback) => {
      const onData = (chunk: Buffer) => {
        reply += chunk.toString();
        const end = reply.indexOf("\r\n");
        if (end >= 0) callback(reply.slice(0, end));
      };
      const onError = (error: Error) => callback(`-${error.message}`);
      socket.on("data", onData);
      socket.on("error", onError);
      return () => {
        socket.off("data", onData);
        socket.off("error", onError);
      };
    });
  } finally {
    socket.destroy();
  }
}

/**
 * A TCP proxy on a free loopback port to one upstream at a time. Pointing it elsewhere also
 * cuts the connections it carries, so nothing (an HTTP keep-alive connection of the polling
 * transport) reaches the old upstream afterwards.
 */
export class TcpProxy {
  private readonly carried = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private upstream: number,
  ) {
    server.on("connection", (client) => {
      const upstream = createConnection(this.upstream, "127.0.0.1");
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        this.carried.add(from);
        from.pipe(to);
        from.on("error", () => to.destroy());
        from.on("close", () => {
          this.carried.delete(from);
          to.destroy();
        });
      }
    });
  }

  /** A proxy to `127.0.0.1:<upstream>`. */
  static async start(upstream: number): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (typeof address !== "object" || !address) throw new Error("the proxy has no port");
    return new TcpProxy(server, address.port, upstream);
  }

  /** New connections go to `127.0.0.1:<upstream>`; the ones carried so far are cut. */
  pointAt(upstream: number): void {
    this.upstream = upstream;
    for (const socket of this.carried) socket.destroy();
  }

  async stop(): Promise<void> {
    for (const socket of this.carried) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
