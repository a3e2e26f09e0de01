import type { ChannelState, SubscriptionEvents, SubscriptionState } from "./channel.js";
import type { Unsubscribe } from "./emitter.js";
import type { PresenceMember } from "./presence.js";
import type { StreamPosition } from "./protocol.js";
import type { EventMap, Publication } from "./publication.js";
import type { Typer } from "./typing.js";

type PublicationListener = (data: unknown, publication: Publication) => void;

/** The presence of a subscription's channel. */
export interface SubscriptionPresence {
  /** The current members, oldest first (empty until fetched; the array changes identity on change). */
  getMembers(): readonly PresenceMember[];
  /** A connection joined. */
  onJoin(listener: (member: PresenceMember) => void): Unsubscribe;
  /** A connection left. */
  onLeave(listener: (member: PresenceMember) => void): Unsubscribe;
  /**
   * The list changed (joins, leaves, status and state changes, refetches), or this
   * connection's own state did: the full list.
   */
  onUpdate(listener: (members: readonly PresenceMember[]) => void): Unsubscribe;
  /** This connection's presence state in the channel (null: none). */
  getMyState(): unknown;
  /** Sets it: `HeraldClient.setPresenceState(channel, state)`. */
  setMyState(state: unknown): Promise<void>;
}

/** Typing in a subscription's channel. */
export interface SubscriptionTyping {
  /** The user is typing (call on every keystroke): throttled, stops by itself when idle. */
  start(): void;
  /** The user stopped typing (sent, cleared input). */
  stop(): void;
  /** Who else is typing now. */
  getTypers(): readonly Typer[];
  /** The typers changed: the full list. */
  onChange(listener: (typers: readonly Typer[]) => void): Unsubscribe;
}

/**
 * A handle on a channel's subscription, from {@link HeraldClient.subscribe}. Every call to
 * `subscribe` returns a new handle, and the channel stays subscribed on the gateway while any
 * handle is alive (one gateway subscription per channel). Listeners added through a handle
 * are removed by its {@link unsubscribe}.
 *
 * @typeParam E - event name → type of its `data`, e.g. `{ "message.created": { id: string } }`.
 */
export class Subscription<E extends EventMap = EventMap> {
  /** The channel's presence. */
  readonly presence: SubscriptionPresence;
  /** Typing in the channel. */
  readonly typing: SubscriptionTyping;
  private readonly cleanups = new Set<Unsubscribe>();
  /** What each listener added with `on` is removed by, for `off`. */
  private readonly added: { event: string; listener: unknown; off: Unsubscribe }[] = [];
  private released = false;

  /** @internal Created by {@link HeraldClient.subscribe}. */
  constructor(private readonly channelState: ChannelState) {
    const state = channelState;
    state.retain();
    state.handles.add(this);
    const track = (off: Unsubscribe): Unsubscribe => this.track(off);
    this.presence = {
      getMembers: () => state.presence.getMembers(),
      onJoin: (listener) => track(state.presence.on("join", listener)),
      onLeave: (listener) => track(state.presence.on("leave", listener)),
      onUpdate: (listener) => track(state.presence.on("update", listener)),
      getMyState: () => state.presenceState,
      setMyState: (next) => state.setPresenceState(next),
    };
    this.typing = {
      start: () => {
        if (!this.released) state.typing.start();
      },
      stop: () => state.typing.stop(),
      getTypers: () => state.typing.getTypers(),
      onChange: (listener) => track(state.typing.onChange(listener)),
    };
  }

  /** The channel name. */
  get channel(): string {
    return this.channelState.channel;
  }

  /** Where the subscription stands on the gateway (`ended` once this handle unsubscribed). */
  get state(): SubscriptionState {
    return this.released ? "ended" : this.channelState.phase;
  }

  /**
   * Whether the server subscribed the connection to this channel (gRPC `Subscribe`): it is
   * restored after reconnects by the gateway, and dropping handles does not end it.
   */
  get serverSide(): boolean {
    return this.channelState.serverSide;
  }

  /** The last position seen (offset and epoch), or null on channels without history. */
  get position(): StreamPosition | null {
    const position = this.channelState.position;
    return position ? { ...position } : null;
  }

  /**
   * Listens to a lifecycle event: `subscribed`, `recovered`, `state_lost`, `sync_requested`,
   * `unsubscribed`, `error`.
   */
  on<K extends keyof SubscriptionEvents>(event: K, listener: SubscriptionEvents[K]): Unsubscribe;
  /** Listens to publications of one event, typed by the subscription's event map. */
  on<K extends keyof E & string>(
    event: K,
    listener: (data: E[K], publication: Publication<E[K]>) => void,
  ): Unsubscribe;
  /** Listens to every publication (`"*"`). */
  on(
    event: "*",
    listener: (data: E[keyof E], publication: Publication<E[keyof E]>) => void,
  ): Unsubscribe;
  on(event: string, listener: (...args: any[]) => void): Unsubscribe {
    if (this.released) return () => {};
    const off = this.track(
      isLifecycle(event)
        ? this.channelState.lifecycle.on(event, listener as never)
        : this.channelState.listen(event, listener as PublicationListener),
    );
    this.added.push({ event, listener, off });
    return off;
  }

  /** Removes `listener` from `event` (every time this handle added it). */
  off(event: string, listener: (...args: any[]) => void): void {
    for (let i = this.added.length - 1; i >= 0; i--) {
      const entry = this.added[i] as (typeof this.added)[number];
      if (entry.event !== event || entry.listener !== listener) continue;
      entry.off();
      this.added.splice(i, 1);
    }
  }

  /**
   * Drops this handle and its listeners. The gateway subscription ends when the last handle
   * of the channel is dropped (at the end of the current task, so an immediate
   * resubscribe keeps it). Calling it again does nothing.
   */
  unsubscribe(): void {
    if (this.released) return;
    this.released = true;
    for (const off of this.cleanups) off();
    this.cleanups.clear();
    this.added.length = 0;
    this.channelState.handles.delete(this);
    this.channelState.releaseRef();
  }

  private track(off: Unsubscribe): Unsubscribe {
    if (this.released) {
      off();
      return () => {};
    }
    this.cleanups.add(off);
    return () => {
      off();
      this.cleanups.delete(off);
    };
  }
}

const LIFECYCLE = new Set([
  "subscribed",
  "recovered",
  "state_lost",
  "sync_requested",
  "unsubscribed",
  "error",
]);

function isLifecycle(event: string): event is keyof SubscriptionEvents {
  return LIFECYCLE.has(event);
}
