import { HeraldError } from "./errors.js";
import type { RefreshResult } from "./protocol.js";

/** setTimeout's largest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the refresher needs from the client. */
export interface RefreshHooks {
  /** A new token from the app. */
  getToken(): string | Promise<string>;
  /** Sends `refresh` on the open connection. */
  refresh(token: string): Promise<RefreshResult>;
  /** The server's clock, ms (local clock plus the skew pings measured). */
  now(): number;
  /** The gateway took the new token. */
  refreshed(token: string, expires: number): void;
  /** getToken or refresh failed. */
  failed(error: HeraldError): void;
}

/**
 * Replaces the connection token before it expires, on the open connection (never by
 * reconnecting): `beforeMs` before `exp`, or halfway through the remaining life when that
 * comes first; a failure is retried while there is time, after which the gateway closes
 * with 4002 and the reconnect fetches a new token.
 */
export class TokenRefresher {
  private run = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** Creates a stopped refresher. */
  constructor(
    private readonly beforeMs: number,
    private readonly hooks: RefreshHooks,
  ) {}

  /** Schedules the refresh of a token expiring at `expires` (Unix seconds; 0: never). */
  start(expires: number): void {
    this.stop();
    this.schedule(this.run, expires);
  }

  /** Stops; a refresh in flight is ignored. */
  stop(): void {
    this.run += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(run: number, expires: number): void {
    if (!expires) return;
    const remaining = expires * 1000 - this.hooks.now();
    let delay = Math.max(remaining - this.beforeMs, remaining / 2);
    // Never a tight loop when getToken keeps answering a token about to expire.
    if (remaining > 2000) delay = Math.max(delay, 1000);
    delay = Math.min(Math.max(0, delay), MAX_TIMER_MS);
    this.timer = setTimeout(() => void this.refresh(run, expires), delay);
  }

  private async refresh(run: number, expires: number): Promise<void> {
    let token: string;
    try {
      token = await this.hooks.getToken();
    } catch (error) {
      this.retry(
        run,
        expires,
        new HeraldError("transport", `getToken failed: ${describe(error)}`, true),
      );
      return;
    }
    if (run !== this.run) return;
    try {
      const result = await this.hooks.refresh(token);
      if (run !== this.run) return;
      this.hooks.refreshed(token, result.expires);
      this.schedule(run, result.expires);
    } catch (error) {
      if (run !== this.run) return;
      this.retry(
        run,
        expires,
        error instanceof HeraldError
          ? error
          : new HeraldError("transport", `refresh failed: ${describe(error)}`, true),
      );
    }
  }

  private retry(run: number, expires: number, error: HeraldError): void {
    if (run !== this.run) return;
    this.hooks.failed(error);
    const remaining = expires * 1000 - this.hooks.now();
    if (remaining < 1500) return;
    this.timer = setTimeout(() => void this.refresh(run, expires), Math.min(5000, remaining / 3));
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
