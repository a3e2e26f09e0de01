/** Exponential backoff between reconnect attempts. */
export interface BackoffOptions {
  /** First delay, ms. Default 1000. */
  initialMs: number;
  /** Each delay is the previous one times this. Default 2. */
  factor: number;
  /** Largest delay before jitter, ms. Default 30000. */
  maxMs: number;
  /** A random 0..jitterMs is added to every delay, ms. Default 1000. */
  jitterMs: number;
  /** After this many failed attempts in a row the client stops (`permanently_disconnected`). Default 20. */
  maxAttempts: number;
}

/** The defaults: 1, 2, 4, 8, 16, 30, 30… s plus 0–1 s of jitter, at most 20 attempts. */
export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialMs: 1000,
  factor: 2,
  maxMs: 30000,
  jitterMs: 1000,
  maxAttempts: 20,
});

/**
 * The delay before reconnect attempt number `attempt` (0 for the first):
 * `min(initialMs * factor^attempt, maxMs)` plus `random() * jitterMs`.
 */
export function backoffDelay(
  options: BackoffOptions,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(options.initialMs * Math.pow(options.factor, attempt), options.maxMs);
  return base + jitter(options.jitterMs, random);
}

/** A random delay in [0, jitterMs), for "reconnect now" without a thundering herd. */
export function jitter(jitterMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * jitterMs);
}

/**
 * Counts failed attempts in a row and gives the delay before the next one; `reset()`
 * after a success.
 */
export class Backoff {
  private attempts = 0;

  /** Creates a counter with these options and random source. */
  constructor(
    private readonly options: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** Failed attempts so far. */
  get failures(): number {
    return this.attempts;
  }

  /** Whether the attempt limit is used up. */
  get exhausted(): boolean {
    return this.attempts >= this.options.maxAttempts;
  }

  /** The delay before the next attempt; counts one more failure. */
  next(): number {
    const delay = backoffDelay(this.options, this.attempts, this.random);
    this.attempts += 1;
    return delay;
  }

  /** Starts over after a success. */
  reset(): void {
    this.attempts = 0;
  }
}
