/** A function that removes the listener it was returned for. Calling it twice is harmless. */
export type Unsubscribe = () => void;

/** Any function: listener types are checked where an {@link Emitter} is declared. */
type Listener = (...args: any[]) => void;

/** A registered listener: a wrapper, so that one function added twice is two entries. */
type Entry = Listener & { original: Listener };

/**
 * A small typed event emitter. A throwing listener does not stop the others: its error is
 * reported with `reportError` (browsers, Node) or rethrown asynchronously.
 */
export class Emitter<Events extends { [K in keyof Events]: Listener }> {
  private readonly listeners = new Map<keyof Events, Set<Entry>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Events[K]): Unsubscribe {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    // Wrapped so that the same function added twice is two listeners, each removable.
    const entry = Object.assign((...args: unknown[]) => listener(...args), { original: listener });
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  /** Removes every registration of `listener` for `event`. */
  off<K extends keyof Events>(event: K, listener: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const entry of [...set]) if (entry.original === listener) set.delete(entry);
  }

  /** Calls every listener of `event` with `args`. */
  emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event);
    if (!set || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }

  /** Whether `event` has any listener. */
  has(event: keyof Events): boolean {
    return (this.listeners.get(event)?.size ?? 0) > 0;
  }

  /** Removes every listener. */
  clear(): void {
    this.listeners.clear();
  }
}

function reportListenerError(error: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof report === "function") {
    report(error);
  } else {
    setTimeout(() => {
      throw error;
    }, 0);
  }
}
