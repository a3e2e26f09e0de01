/** Retries with exponential backoff and jitter. */

export interface RetryOptions {
  /** Retries after the first attempt. Default 3. */
  retries?: number;
  /** The backoff before the first retry, doubling each time. Default 100 ms. */
  initialDelayMs?: number;
  /** The backoff's ceiling. Default 2,000 ms. */
  maxDelayMs?: number;
}

export type RetryPolicy = Required<RetryOptions>;

export const DEFAULT_RETRY: RetryPolicy = { retries: 3, initialDelayMs: 100, maxDelayMs: 2_000 };

export function retryPolicy(options: number | RetryOptions | undefined): RetryPolicy {
  const given = typeof options === "number" ? { retries: options } : (options ?? {});
  const policy = { ...DEFAULT_RETRY, ...given };
  if (!Number.isInteger(policy.retries) || policy.retries < 0) {
    throw new RangeError(`retries must be a non-negative integer, got ${policy.retries}`);
  }
  return policy;
}

/**
 * The wait before retry number `retry` (0 = the first retry): half of the exponential step
 * plus a random half, so it grows with each retry and publishers that failed together do not
 * retry together.
 */
export function backoffDelay(retry: number, policy: RetryPolicy, random = Math.random): number {
  const step = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** retry);
  return step / 2 + (random() * step) / 2;
}

/** Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or retries run out. */
export async function withRetries<T>(
  attempt: () => Promise<T>,
  retryable: (error: unknown) => boolean,
  policy: RetryPolicy,
): Promise<T> {
  for (let retry = 0; ; retry++) {
    try {
      return await attempt();
    } catch (error) {
      if (retry >= policy.retries || !retryable(error)) throw error;
      await new Promise((resolve) => setTimeout(resolve, backoffDelay(retry, policy)));
    }
  }
}
