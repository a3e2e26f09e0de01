import type { Emitter } from "./emitter.js";
import { HeraldError } from "./errors.js";
import type { ClientEvents } from "./events.js";
import type { PingResult } from "./protocol.js";

/** Heartbeat timing. */
export interface HeartbeatOptions {
  intervalMs: number;
  timeoutMs: number;
  degradedLatencyMs: number;
}

/**
 * The `ping` command heartbeat of one connection: pings at start and every `intervalMs`,
 * reports a ping unanswered within `timeoutMs` (the connection is dead), and keeps the
 * latency, whether it is degraded, and the server clock's offset (for token expiry).
 */
export class Heartbeat {
  /** The last round trip, ms. */
  latency: number | null = null;
  /** Whether the last round trip was over `degradedLatencyMs`. */
  degraded = false;
  /** Server clock minus local clock, ms. */
  skewMs = 0;
  private run = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** Creates a stopped heartbeat. */
  constructor(
    private readonly options: HeartbeatOptions,
    private readonly events: Emitter<ClientEvents>,
  ) {}

  /** Starts pinging through `ping`; `dead` is called when a ping times out. */
  start(ping: (timeoutMs: number) => Promise<PingResult>, dead: () => void): void {
    this.stop();
    const run = this.run;
    const tick = () => {
      if (run !== this.run) return;
      const sentAt = Date.now();
      ping(this.options.timeoutMs).then(
        (result) => {
          if (run === this.run) this.measured(sentAt, result);
        },
        (error: unknown) => {
          if (run === this.run && error instanceof HeraldError && error.code === "timeout") dead();
        },
      );
      this.timer = setTimeout(tick, this.options.intervalMs);
    };
    tick();
  }

  /** Stops; replies to earlier pings are ignored. */
  stop(): void {
    this.run += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private measured(sentAt: number, result: PingResult): void {
    const latency = Date.now() - sentAt;
    this.latency = latency;
    if (typeof result.ts === "number" && result.ts > 0) {
      this.skewMs = result.ts - (sentAt + latency / 2);
    }
    this.events.emit("latency", latency);
    if (latency > this.options.degradedLatencyMs) {
      if (!this.degraded) {
        this.degraded = true;
        this.events.emit("connection_degraded", { latency });
      }
    } else if (this.degraded) {
      this.degraded = false;
      this.events.emit("connection_recovered", { latency });
    }
  }
}
