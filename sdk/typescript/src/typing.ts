import { Emitter, type Unsubscribe } from "./emitter.js";
import { isObject, type WireTyper } from "./protocol.js";

/** Someone typing in a channel. */
export interface Typer {
  /** The user id. */
  userId: string;
  /** `info.name` from the user's token, when it is a string. */
  name?: string;
  /** `info.avatar` from the user's token, when it is a string. */
  avatar?: string;
  /** The whole `info` claim of the user's token, as data. */
  info: Record<string, unknown> | null;
}

/** Timing of typing indicators. */
export interface TypingTimings {
  /** `start()` sends `typing active:true` at most this often, ms. Default 1000. */
  throttleMs: number;
  /** `stop()` runs by itself this long after the last `start()`, ms. Default 5000. */
  idleMs: number;
  /** A typer with no push for this long disappears (in case the stop was lost), ms. Default 6000. */
  expiryMs: number;
}

/** What a typing tracker needs from its channel. */
export interface TypingHost {
  readonly channel: string;
  /** Whether the channel's subscription is active on the current connection. */
  isSubscribed(): boolean;
  /** Sends a command on the current connection; its failure is not the caller's concern. */
  send(method: string, params: unknown): void;
}

function toTyper(wire: WireTyper): Typer {
  const info = isObject(wire.info) ? wire.info : null;
  const typer: Typer = { userId: wire.user, info };
  if (typeof info?.["name"] === "string") typer.name = info["name"];
  if (typeof info?.["avatar"] === "string") typer.avatar = info["avatar"];
  return typer;
}

/**
 * Typing in one channel, both ways: who else is typing (from the subscribe result's
 * `typing` and `typing` pushes; a typer disappears on `active:false` or after `expiryMs`
 * without a push), and this client's own indicator (`start()` throttled, `stop()` on idle).
 */
export class TypingTracker {
  private readonly emitter = new Emitter<{ change: (typers: readonly Typer[]) => void }>();
  private readonly typers = new Map<
    string,
    { typer: Typer; timer: ReturnType<typeof setTimeout> }
  >();
  private snapshot: readonly Typer[] = Object.freeze([]);
  private active = false;
  private lastSentAt = -Infinity;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;

  /** Creates the tracker of `host`'s channel. */
  constructor(
    private readonly host: TypingHost,
    private readonly timings: TypingTimings,
  ) {}

  /** Who is typing now (other users only: the gateway does not echo a user's own typing). */
  getTypers(): readonly Typer[] {
    return this.snapshot;
  }

  /** Listens to changes of {@link getTypers}. */
  onChange(listener: (typers: readonly Typer[]) => void): Unsubscribe {
    return this.emitter.on("change", listener);
  }

  /**
   * The user typed: sends `typing active:true` unless one went out less than `throttleMs`
   * ago, and (re)arms the idle timer that calls {@link stop}.
   */
  start(): void {
    if (!this.host.isSubscribed()) return;
    const now = Date.now();
    if (!this.active || now - this.lastSentAt >= this.timings.throttleMs) {
      this.active = true;
      this.lastSentAt = now;
      this.host.send("typing", { channel: this.host.channel, active: true });
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.stop(), this.timings.idleMs);
  }

  /** The user stopped typing: sends `typing active:false` if a start went out. */
  stop(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (!this.active) return;
    this.active = false;
    this.lastSentAt = -Infinity;
    if (this.host.isSubscribed()) {
      this.host.send("typing", { channel: this.host.channel, active: false });
    }
  }

  /** The subscribe result's `typing`: who types right now. */
  reset(typers: readonly WireTyper[]): void {
    this.clearTypers(false);
    for (const wire of typers) if (wire.active) this.add(wire);
    this.publish();
  }

  /** A `typing` push. */
  push(wire: WireTyper): void {
    const had = this.typers.has(wire.user);
    if (wire.active) {
      this.add(wire);
      if (!had) this.publish();
    } else if (had) {
      this.remove(wire.user);
    }
  }

  /** The connection or the subscription ended: no one types, this client included. */
  suspend(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.active = false;
    this.lastSentAt = -Infinity;
    this.clearTypers(true);
  }

  private add(wire: WireTyper): void {
    const existing = this.typers.get(wire.user);
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => this.remove(wire.user), this.timings.expiryMs);
    this.typers.set(wire.user, { typer: existing?.typer ?? toTyper(wire), timer });
  }

  private remove(user: string): void {
    const entry = this.typers.get(user);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.typers.delete(user);
    this.publish();
  }

  private clearTypers(notify: boolean): void {
    const had = this.typers.size > 0;
    for (const { timer } of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    if (notify && had) this.publish();
  }

  private publish(): void {
    const next = Object.freeze([...this.typers.values()].map((entry) => entry.typer));
    if (next.length === 0 && this.snapshot.length === 0) return;
    this.snapshot = next;
    this.emitter.emit("change", this.snapshot);
  }
}
