/**
 * Starts the real `herald` binary on free loopback ports for integration tests and the
 * recovery benchmark, waits until `/readyz` answers 200, and kills it afterwards.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the nearest directory above this file holding the API's proto. */
export const REPO_ROOT = findRepoRoot(dirname(fileURLToPath(import.meta.url)));

function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "proto/herald/v1/api.proto"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no Herald repository above ${start}`);
  }
}
/** The gateway binary the tests drive. */
export const HERALD_BIN = process.env["HERALD_BIN"] ?? join(REPO_ROOT, "target/debug/herald");
/** The gRPC API definition. */
export const API_PROTO = join(REPO_ROOT, "proto/herald/v1/api.proto");

/** The chat namespace of the client-publish tests. */
export const CHAT_NAMESPACE = `
[namespaces.chat]
access = "org_member"
client_publish = true
history_size = 50
history_ttl = 600
presence = true
join_leave = true
typing = true
`;

export interface GatewayOptions {
  /** TOML config file contents, passed with `--config`. */
  config?: string;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Run `herald serve --dev` (the demo at `/`, `/dev/token`). */
  dev?: boolean;
  /** Where the whole output goes, besides the tail kept for `logs()`. */
  logFile?: string;
}

export interface Gateway {
  readonly httpAddr: string;
  readonly grpcAddr: string;
  readonly wsUrl: string;
  readonly httpUrl: string;
  readonly secret: string;
  readonly apiKey: string;
  /** Kills the process (SIGKILL: a crash, no drain). */
  kill(): Promise<void>;
  /** Starts it again on the same ports (with `env` over the first start's) and waits until ready. */
  start(env?: Record<string, string>): Promise<void>;
  /** Kills it and removes its files. */
  stop(): Promise<void>;
  /** The last lines it logged. */
  logs(): string;
}

/** A free TCP port on 127.0.0.1 (bound then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Starts a gateway and waits until it is ready. */
export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(
      `the gateway binary ${HERALD_BIN} is missing: run cargo build -p herald-gateway --bin herald`,
    );
  }
  const secret = randomBytes(24).toString("hex");
  const apiKey = `sdk-test-${randomBytes(12).toString("hex")}`;
  const dir = mkdtempSync(join(tmpdir(), "herald-sdk-"));
  const args = options.dev ? ["serve", "--dev"] : ["serve"];
  if (options.config !== undefined) {
    const path = join(dir, "herald.toml");
    writeFileSync(path, options.config);
    args.push("--config", path);
  }
  // Port 0: the system picks ports no other process can take between a probe and the bind
  // (outgoing connections of the tests running beside this one take ports from the same
  // range); the node logs the addresses it bound in its JSON "serving" line, and a restart
  // binds those again.
  const env: Record<string, string | undefined> = {
    ...process.env,
    HERALD_HTTP_ADDR: "127.0.0.1:0",
    HERALD_GRPC_ADDR: "127.0.0.1:0",
    HERALD_METRICS_ADDR: "127.0.0.1:0",
    HERALD_JWT_SECRET: secret,
    HERALD_API_KEYS: apiKey,
    HERALD_DRAIN_SECONDS: "1",
    HERALD_LOG_FORMAT: "json",
    RUST_LOG: `${process.env["RUST_LOG"] ?? "warn"},herald_gateway::server=info`,
    ...options.env,
  };

  let child: ChildProcess | null = null;
  let log = "";
  let exited: Promise<void> = Promise.resolve();
  let bound: ServingAddrs | null = null;

  const file = options.logFile ? createWriteStream(options.logFile) : null;
  const start = async (overrides: Record<string, string> = {}) => {
    const same = bound && {
      HERALD_HTTP_ADDR: bound.http,
      HERALD_GRPC_ADDR: bound.grpc,
      HERALD_METRICS_ADDR: bound.metrics,
    };
    const proc = spawn(HERALD_BIN, args, {
      cwd: dir,
      env: { ...env, ...same, ...overrides },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    let serving: ServingAddrs | null = null;
    let partial = "";
    const append = (chunk: Buffer) => {
      file?.write(chunk);
      log = (log + chunk.toString()).slice(-8000);
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      serving ??= lines.map(servingAddrs).find((addrs) => addrs !== null) ?? null;
    };
    proc.stdout?.on("data", append);
    proc.stderr?.on("data", append);
    let exitCode: number | null | undefined;
    exited = new Promise((resolve) =>
      proc.once("exit", (code) => {
        exitCode = code;
        resolve();
      }),
    );
    const addrs = await waitServing(
      () => serving,
      () => exitCode,
      () => log,
    );
    bound ??= addrs;
    await waitReady(
      addrs.http,
      () => exitCode,
      () => log,
    );
    return addrs;
  };

  const kill = async () => {
    const proc = child;
    child = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  };

  const stop = async () => {
    await kill();
    file?.end();
    rmSync(dir, { recursive: true, force: true });
  };
  let httpAddr: string;
  let grpcAddr: string;
  try {
    ({ http: httpAddr, grpc: grpcAddr } = await start());
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    httpAddr,
    grpcAddr,
    wsUrl: `ws://${httpAddr}/ws`,
    httpUrl: `http://${httpAddr}`,
    secret,
    apiKey,
    kill,
    start: async (overrides) => {
      await start(overrides);
    },
    stop,
    logs: () => log,
  };
}

/** The addresses a node bound, from its JSON "serving" log line. */
interface ServingAddrs {
  http: string;
  grpc: string;
  metrics: string;
}

/** The addresses in a JSON log line if it is the node's "serving" line, else null. */
function servingAddrs(line: string): ServingAddrs | null {
  if (!line.includes('"serving"')) return null;
  try {
    const fields = (JSON.parse(line) as { fields?: Record<string, unknown> }).fields ?? {};
    const { message, http, grpc, metrics } = fields;
    if (message !== "serving") return null;
    if (typeof http !== "string" || typeof grpc !== "string" || typeof metrics !== "string") {
      return null;
    }
    return { http, grpc, metrics };
  } catch {
    return null;
  }
}

/**
 * Resolves with the addresses of the node's "serving" line once it is logged. Fails when the
 * process exits first or after 20 s, with the process's log.
 */
async function waitServing(
  serving: () => ServingAddrs | null,
  exitCode: () => number | null | undefined,
  log: () => string,
): Promise<ServingAddrs> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const addrs = serving();
    if (addrs) return addrs;
    const code = exitCode();
    if (code !== undefined) {
      throw new Error(`herald exited (${code}) before it was serving:\n${log()}`);
    }
    if (Date.now() > deadline) throw new Error(`herald not serving within 20 s:\n${log()}`);
    // The log is read as it comes; poll what it found.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Resolves once `http://<httpAddr>/readyz` answers 200. Fails when the process exits first
 * (`exitCode` turns defined) or after 20 s, with the process's log.
 */
export async function waitReady(
  httpAddr: string,
  exitCode: () => number | null | undefined,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const code = exitCode();
    if (code !== undefined) {
      throw new Error(`herald exited (${code}) before it was ready:\n${log()}`);
    }
    try {
      const response = await fetch(`http://${httpAddr}/readyz`);
      await response.body?.cancel();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`herald not ready within 20 s:\n${log()}`);
    // A process coming up has no event to wait on: poll.
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
