type Listener = () => void;

interface EventTargetish {
  addEventListener?: (type: string, listener: Listener) => void;
  removeEventListener?: (type: string, listener: Listener) => void;
}

/**
 * Calls `retry` when the browser comes back online (`online` on the global object) or the
 * page becomes visible again (`visibilitychange` to `visible`), and `offline` when the
 * browser says the network is gone, where those exist (not in Node). A reconnect then does
 * not wait out its backoff, nor try while there is no network.
 */
export class EnvironmentWatch {
  private attached = false;
  private readonly onVisibility: Listener;

  /** Creates a detached watch calling `retry` and `offline`. */
  constructor(
    private readonly retry: Listener,
    private readonly offline: Listener,
  ) {
    this.onVisibility = () => {
      const document = (globalThis as { document?: { visibilityState?: string } }).document;
      if (document?.visibilityState === "visible") this.retry();
    };
  }

  /** Starts or stops listening. */
  attach(on: boolean): void {
    if (on === this.attached) return;
    const global = globalThis as EventTargetish & { document?: EventTargetish };
    const method = on ? "addEventListener" : "removeEventListener";
    global[method]?.("online", this.retry);
    global[method]?.("offline", this.offline);
    global.document?.[method]?.("visibilitychange", this.onVisibility);
    this.attached = on;
  }

  /** Whether the browser says there is no network (`navigator.onLine` false). */
  static isOffline(): boolean {
    const navigator = (globalThis as { navigator?: { onLine?: boolean } }).navigator;
    return navigator?.onLine === false;
  }
}
