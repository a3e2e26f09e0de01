type Listener = () => void;

interface EventTargetish {
  addEventListener?: (type: string, listener: Listener) => void;
  removeEventListener?: (type: string, listener: Listener) => void;
}

/**
 * Calls `retry` when the browser comes back online (`online` on the global object) or the
 * page becomes visible again (`visibilitychange` to `visible`), where those exist (not in
 * Node). A reconnect then does not wait out its backoff.
 */
export class EnvironmentWatch {
  private attached = false;
  private readonly onVisibility: Listener;

  /** Creates a detached watch calling `retry`. */
  constructor(private readonly retry: Listener) {
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
    global.document?.[method]?.("visibilitychange", this.onVisibility);
    this.attached = on;
  }
}
