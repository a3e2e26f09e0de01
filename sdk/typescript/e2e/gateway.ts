/**
 * `herald serve --dev` on free loopback ports, for the demo's browser tests: the demo page at
 * `/`, `/dev/token`, and a gRPC API with a known key (so a test can close a user's sockets).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, HERALD_BIN, waitReady } from "../test/helpers/gateway.js";

export interface DevGateway {
  /** `http://127.0.0.1:<port>`: the demo. */
  readonly url: string;
  readonly grpcAddr: string;
  readonly apiKey: string;
  /**
   * Kills the process (SIGKILL) and starts it again on the same ports with a new JWT secret,
   * as a developer restarting `herald serve --dev` does: history and tokens are gone.
   */
  restart(): Promise<void>;
  /** Kills the process and removes its directory. */
  stop(): Promise<void>;
  /** The last lines it logged. */
  logs(): string;
}

/**
 * Starts a development gateway and waits (at most 20 s) until `/readyz` answers 200. Its whole
 * output goes to `logFile` when given.
 */
export async function startDevGateway(logFile?: string): Promise<DevGateway> {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(
      `the gateway binary ${HERALD_BIN} is missing: run cargo build -p herald-gateway --bin herald`,
    );
  }
  const [http, grpc, metrics] = [await freePort(), await freePort(), await freePort()];
  const httpAddr = `127.0.0.1:${http}`;
  const grpcAddr = `127.0.0.1:${grpc}`;
  const apiKey = `demo-e2e-${randomBytes(12).toString("hex")}`;
  // Its own working directory, so that no ./herald.toml is picked up.
  const dir = mkdtempSync(join(tmpdir(), "herald-demo-e2e-"));
  const file = logFile ? createWriteStream(logFile) : null;
  let log = "";
  const append = (chunk: Buffer) => {
    file?.write(chunk);
    log = (log + chunk.toString()).slice(-8000);
  };

  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const kill = async () => {
    const proc = child;
    child = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  };

  const start = async () => {
    const proc = spawn(HERALD_BIN, ["serve", "--dev"], {
      cwd: dir,
      env: {
        ...process.env,
        HERALD_HTTP_ADDR: httpAddr,
        HERALD_GRPC_ADDR: grpcAddr,
        HERALD_METRICS_ADDR: `127.0.0.1:${metrics}`,
        // Explicit, so the test knows the API key (dev mode generates both only when unset).
        HERALD_JWT_SECRET: randomBytes(24).toString("hex"),
        HERALD_API_KEYS: apiKey,
        HERALD_DRAIN_SECONDS: "1",
        RUST_LOG: process.env["RUST_LOG"] ?? "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    proc.stdout?.on("data", append);
    proc.stderr?.on("data", append);
    let exitCode: number | null | undefined;
    exited = new Promise((resolve) =>
      proc.once("exit", (code) => {
        exitCode = code;
        resolve();
      }),
    );
    await waitReady(
      httpAddr,
      () => exitCode,
      () => log,
    );
  };

  const stop = async () => {
    await kill();
    file?.end();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await start();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: `http://${httpAddr}`,
    grpcAddr,
    apiKey,
    async restart() {
      await kill();
      await start();
    },
    stop,
    logs: () => log,
  };
}
