import {
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useSyncExternalStore,
  type RefObject,
} from "react";
import type { ConnectionState } from "../events.js";
import type { PresenceMember } from "../presence.js";
import type { Publication } from "../publication.js";
import type { Subscription } from "../subscription.js";
import type { Typer } from "../typing.js";
import { useHerald } from "./context.js";

/**
 * Calls `handler` for each publication of `event` on `channel` while the component is
 * mounted. Subscribes on mount and unsubscribes on unmount; the client reference-counts
 * channels, so StrictMode's double mount and several components on one channel share one
 * subscription. `handler` may change on every render without resubscribing.
 */
export function useChannelEvent<T = unknown>(
  channel: string,
  event: string,
  handler: (data: T, publication: Publication<T>) => void,
): void {
  const client = useHerald();
  const latest = useRef(handler);
  useEffect(() => {
    latest.current = handler;
  });
  useEffect(() => {
    const subscription = client.subscribe<Record<string, T>>(channel);
    subscription.on(event, (data, publication) => latest.current(data, publication));
    return () => subscription.unsubscribe();
  }, [client, channel, event]);
}

/**
 * A store over one channel's subscription for `useSyncExternalStore`: subscribing to the
 * store subscribes to the channel (one handle per React subscriber), and the handle is kept
 * so that actions (typing) can use it.
 */
function useChannelStore<T>(
  channel: string,
  listen: (subscription: Subscription, onChange: () => void) => void,
  read: () => T,
): { value: T; subscription: RefObject<Subscription | null> } {
  const client = useHerald();
  const subscription = useRef<Subscription | null>(null);
  const subscribe = useCallback(
    (onChange: () => void) => {
      const handle = client.subscribe(channel);
      subscription.current = handle;
      listen(handle, onChange);
      // The snapshot may have changed between render and subscribe.
      onChange();
      return () => {
        handle.unsubscribe();
        if (subscription.current === handle) subscription.current = null;
      };
    },
    // `listen` is a module-level function of each hook: stable.
    [client, channel],
  );
  const value = useSyncExternalStore(subscribe, read, read);
  return { value, subscription };
}

/** What {@link usePresence} returns. */
export interface PresenceView {
  /** The members, one entry per connection, each with its `state` when it set one. */
  members: readonly PresenceMember[];
  /** This connection's presence state in the channel (null: none). */
  myState: unknown;
  /** Sets it (coalesced to one send per 250 ms; at most 1024 bytes of JSON; null clears it). */
  setMyState: (state: unknown) => Promise<void>;
}

/**
 * The live presence of `channel`: its members (one entry per connection, with their
 * presence state), re-rendering on joins, leaves, status and state changes, and this
 * connection's own state with its setter.
 */
export function usePresence(channel: string): PresenceView {
  const client = useHerald();
  const last = useRef<{ members: readonly PresenceMember[]; myState: unknown } | null>(null);
  const read = useCallback(() => {
    const members = client.getPresence(channel);
    const myState = client.getPresenceState(channel);
    const previous = last.current;
    if (previous && previous.members === members && previous.myState === myState) return previous;
    last.current = { members, myState };
    return last.current;
  }, [client, channel]);
  const { value } = useChannelStore(channel, listenPresence, read);
  const setMyState = useCallback(
    (state: unknown) => client.setPresenceState(channel, state),
    [client, channel],
  );
  return useMemo(
    () => ({ members: value.members, myState: value.myState, setMyState }),
    [value, setMyState],
  );
}

function listenPresence(subscription: Subscription, onChange: () => void): void {
  subscription.presence.onUpdate(onChange);
}

/** What {@link useTyping} returns. */
export interface TypingState {
  /** Who else is typing in the channel. */
  typers: readonly Typer[];
  /** Call with true on each keystroke (throttled, stops by itself when idle), false to stop. */
  setTyping: (active: boolean) => void;
}

/** Who is typing in `channel`, and a setter for this user's own indicator. */
export function useTyping(channel: string): TypingState {
  const client = useHerald();
  const read = useCallback(() => client.getTypers(channel), [client, channel]);
  const { value, subscription } = useChannelStore(channel, listenTyping, read);
  const setTyping = useCallback(
    (active: boolean) => {
      const handle = subscription.current;
      if (!handle) return;
      if (active) handle.typing.start();
      else handle.typing.stop();
    },
    [subscription],
  );
  return { typers: value, setTyping };
}

function listenTyping(subscription: Subscription, onChange: () => void): void {
  subscription.typing.onChange(onChange);
}

/** What {@link useConnectionState} returns. */
export interface ConnectionSnapshot {
  state: ConnectionState;
  /** The last ping round trip, ms; null before the first. */
  latency: number | null;
  /** Whether the last round trip was over the client's `degradedLatencyMs`. */
  degraded: boolean;
}

/** The connection's state, latency and whether it is degraded, re-rendering on changes. */
export function useConnectionState(): ConnectionSnapshot {
  const client = useHerald();
  const last = useRef<ConnectionSnapshot | null>(null);
  const subscribe = useCallback(
    (onChange: () => void) => {
      const offs = [
        client.onConnectionChange(onChange),
        client.on("latency", onChange),
        client.on("connection_degraded", onChange),
        client.on("connection_recovered", onChange),
      ];
      return () => {
        for (const off of offs) off();
      };
    },
    [client],
  );
  const read = useCallback((): ConnectionSnapshot => {
    const next: ConnectionSnapshot = {
      state: client.getConnectionState(),
      latency: client.getLatency(),
      degraded: client.isDegraded(),
    };
    const previous = last.current;
    if (
      previous &&
      previous.state === next.state &&
      previous.latency === next.latency &&
      previous.degraded === next.degraded
    ) {
      return previous;
    }
    last.current = next;
    return next;
  }, [client]);
  return useSyncExternalStore(subscribe, read, read);
}

/**
 * The channels the server subscribed this client to (`herald.getServerSubscriptions()`),
 * re-rendering when the server adds or removes one. Use `useChannelEvent`, `usePresence` and
 * `useTyping` on them as on any channel: they subscribe nothing more.
 */
export function useServerSubscriptions(): readonly string[] {
  const client = useHerald();
  const last = useRef<readonly string[]>([]);
  const subscribe = useCallback(
    (onChange: () => void) => {
      const offs = [
        client.on("server_subscribed", onChange),
        client.on("server_unsubscribed", onChange),
      ];
      return () => {
        for (const off of offs) off();
      };
    },
    [client],
  );
  const read = useCallback((): readonly string[] => {
    const next = client.getServerSubscriptions();
    const previous = last.current;
    if (previous.length === next.length && previous.every((channel, i) => channel === next[i])) {
      return previous;
    }
    last.current = next;
    return next;
  }, [client]);
  return useSyncExternalStore(subscribe, read, read);
}
