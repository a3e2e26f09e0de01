/**
 * `herald serve --dev` on free loopback ports, for the demo's browser tests: the demo page at
 * `/`, `/dev/token`, and a gRPC API with a known key (so a test can close a user's sockets).
 */
import { randomBytes } from "node:crypto";
import { startGateway } from "../test/helpers/gateway.js";

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
  const gateway = await startGateway({ dev: true, logFile });
  return {
    url: gateway.httpUrl,
    grpcAddr: gateway.grpcAddr,
    apiKey: gateway.apiKey,
    async restart() {
      await gateway.kill();
      await gateway.start({ HERALD_JWT_SECRET: randomBytes(24).toString("hex") });
    },
    stop: gateway.stop,
    logs: gateway.logs,
  };
}
