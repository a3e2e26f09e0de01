/** Bounded waits on events: every wait in the tests ends with a clear error. */

/**
 * Resolves with the first value `listen` reports that satisfies `accept`; rejects after
 * `timeoutMs` naming `what`. `listen` registers a callback and returns its remover.
 */
export function waitFor<T>(
  what: string,
  listen: (callback: (value: T) => void) => () => void,
  accept: (value: T) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let off: (() => void) | undefined;
    const timer = setTimeout(() => {
      off?.();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    off = listen((value) => {
      if (!accept(value)) return;
      clearTimeout(timer);
      // The callback may run inside `listen` itself, before `off` is assigned.
      queueMicrotask(() => off?.());
      resolve(value);
    });
  });
}
