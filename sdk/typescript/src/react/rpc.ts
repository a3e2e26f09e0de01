import { useCallback, useRef, useState } from "react";
import type { RpcOptions } from "../client.js";
import { HeraldError } from "../errors.js";
import { useHerald } from "./context.js";

/** What {@link useRpc} returns. */
export interface RpcState<T> {
  /**
   * Calls the method with `data` (queued while offline, like `herald.rpc`). The promise is
   * `herald.rpc`'s: await it for this call's result, or ignore it and render the state.
   */
  call: (data?: unknown, options?: RpcOptions) => Promise<T>;
  /** The last call's result that succeeded (kept while the next call runs); undefined before. */
  data: T | undefined;
  /** The last call's error; null while a call runs and after one succeeded. */
  error: HeraldError | null;
  /** Whether the last call is running. */
  loading: boolean;
}

interface Settled<T> {
  data: T | undefined;
  error: HeraldError | null;
  loading: boolean;
}

/**
 * A backend method (`herald.rpc`) for a component: `call` it from an event handler and render
 * `data`, `error` and `loading` of the last call (an earlier call answering late changes
 * nothing).
 *
 * @typeParam T - the type of the data the method returns.
 */
export function useRpc<T = unknown>(method: string): RpcState<T> {
  const client = useHerald();
  const [state, setState] = useState<Settled<T>>({
    data: undefined,
    error: null,
    loading: false,
  });
  const last = useRef(0);
  const call = useCallback(
    (data?: unknown, options?: RpcOptions) => {
      const id = ++last.current;
      setState((previous) => ({ ...previous, error: null, loading: true }));
      const promise = client.rpc<T>(method, data, options);
      // A handler on the promise itself: a caller that ignores it gets no unhandled rejection.
      promise.then(
        (result) => {
          if (id === last.current) setState({ data: result, error: null, loading: false });
        },
        (error: unknown) => {
          if (id !== last.current) return;
          const heraldError =
            error instanceof HeraldError
              ? error
              : new HeraldError("transport", String(error), false);
          setState((previous) => ({ ...previous, error: heraldError, loading: false }));
        },
      );
      return promise;
    },
    [client, method],
  );
  return { call, ...state };
}
