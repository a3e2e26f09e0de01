import { Emitter, type Unsubscribe } from "./emitter.js";
import { HeraldError } from "./errors.js";
import { PresenceTracker } from "./presence.js";
import {
  UnsubscribeCodes,
  type StreamPosition,
  type HistoryResult,
  type SubscribeResult,
  type WirePresenceDiff,
  type WirePresenceMember,
  type WirePresenceState,
  type WirePublication,
  type WireTyper,
} from "./protocol.js";
import { toPublication, type Publication } from "./publication.js";
import { TokenRefresher } from "./refresh.js";
import type { RefreshResult } from "./protocol.js";
import { TypingTracker, type TypingTimings } from "./typing.js";

/** Where a channel's subscription tokens come from. */
export type SubscriptionTokenSource = (channel: string) => string | Promise<string>;

/** Options of {@link HeraldClient.subscribe}. */
export interface SubscribeOptions {
  /**
   * A subscription token for the channel, used as is for every subscribe (a fixed token
   * cannot be refreshed: prefer `getToken`, which is called again before it expires).
   */
  token?: string;
  /**
   * A subscription token for the channel, from your backend (a JWT with `sub`, `channel` and
   * `exp`). Called for every subscribe (the first, after a reconnect, after the server ended
   * the subscription with 2401) and before the token expires, to extend the subscription with
   * `subRefresh` on the open connection. The last handle to pass one sets it for the channel.
   */
  getToken?: SubscriptionTokenSource;
}

/** What a (re)subscribe found, passed to `subscribed`, `recovered` and `state_lost`. */
export interface SubscribedInfo {
  channel: string;
  /** Whether this subscribe asked to recover from a position. */
  resubscribed: boolean;
  /** Whether every missed publication was delivered (only meaningful when `resubscribed`). */
  recovered: boolean;
  /** How many missed publications were delivered. */
  recoveredPublications: number;
  /** The channel's position after the subscribe (offset 0, epoch "" without history). */
  position: StreamPosition;
}

/** A server-side end of a subscription. */
export interface UnsubscribedInfo {
  channel: string;
  /**
   * 2000 (the server ended it), 2403 (a connection `refresh` revoked the permission), 2401
   * (the subscription token expired and the subscription has no `getToken` to get another)
   * or another code; 2500, and 2401 with `getToken`, are handled by resubscribing.
   */
  code: number;
  reason: string;
}

/** Lifecycle events of a subscription. */
export interface SubscriptionEvents {
  /** Each time the subscription becomes active (first subscribe and every resubscribe). */
  subscribed: (info: SubscribedInfo) => void;
  /** After a reconnect: every missed publication was delivered, in order. */
  recovered: (info: SubscribedInfo) => void;
  /** After a reconnect: history no longer covers the gap; refetch the channel's state. */
  state_lost: (info: SubscribedInfo) => void;
  /** With `state_lost` (and the client's `sync_requested`): refetch the channel's state. */
  sync_requested: (info: SubscribedInfo) => void;
  /** The server ended the subscription (2000, 2403, …): it will not resume by itself. */
  unsubscribed: (info: UnsubscribedInfo) => void;
  /** Subscribing failed (permission denied, unknown channel…), or a presence fetch did. */
  error: (error: HeraldError) => void;
}

/** The phases of a channel's subscription on the gateway. */
export type SubscriptionState =
  /** Wanted, waiting for a connection (or for the next retry). */
  | "pending"
  /** The `subscribe` command is in flight. */
  | "subscribing"
  /** Active: publications flow. */
  | "subscribed"
  /** The gateway refused it for good (see the `error` event); retried after a reconnect. */
  | "failed"
  /**
   * Ended: unsubscribed by the app, or by the server (2000, 2403, 2401 without `getToken`).
   * A server-side subscription ends only by the server.
   */
  | "ended";

/** What a channel needs from the client. */
export interface ChannelHost {
  /** Whether the client has a connected session. */
  isConnected(): boolean;
  /** Sends a command on the current connection; rejects when not connected. */
  request<T>(method: string, params: unknown): Promise<T>;
  /** Sends a command whose reply does not matter. */
  send(method: string, params: unknown): void;
  /** Delay before retrying a subscribe refused with a temporary error. */
  retryDelay(attempt: number): number;
  /** The channel has no more handles: forget it. */
  release(channel: ChannelState): void;
  readonly typingTimings: TypingTimings;
  /** The server's clock, ms. */
  now(): number;
  /** How long before a token's expiry it is refreshed, ms. */
  readonly refreshBeforeExpiryMs: number;
  /** A channel's recovery failed: the client emits `sync_requested`. */
  syncRequested(info: SubscribedInfo): void;
}

/** The largest presence state, bytes of JSON (the gateway's default limit). */
export const PRESENCE_STATE_BYTES = 1024;
/** The gateway takes one state change per channel and connection per this many ms. */
const PRESENCE_STATE_INTERVAL_MS = 250;

interface StateWaiter {
  resolve: () => void;
  reject: (error: HeraldError) => void;
}

/** An in-flight subscribe that stopped mattering before it was sent. */
const STALE = Symbol("stale subscribe");

type PublicationListener = (data: unknown, publication: Publication) => void;

/**
 * One channel's subscription, shared by every {@link Subscription} handle on it: counts
 * the handles, subscribes and unsubscribes on the gateway (coalescing changes within one
 * task, so a mount–unmount–mount runs one `subscribe`), keeps the last position seen,
 * recovers after reconnects, drops publications already delivered, and holds the
 * channel's presence and typing.
 */
export class ChannelState {
  /** Handles alive. */
  refs = 0;
  phase: SubscriptionState = "pending";
  /** The last position seen; null until the first subscribe on a channel with history. */
  position: StreamPosition | null = null;
  /**
   * The server subscribed the connection (a `subscribe` push): it restores the subscription
   * after reconnects, and it stays without handles until the server ends it.
   */
  serverSide = false;
  readonly lifecycle = new Emitter<SubscriptionEvents>();
  readonly presence: PresenceTracker;
  readonly typing: TypingTracker;
  private readonly listeners = new Map<string, Set<PublicationListener>>();
  /** Publications that arrived while the subscribe was in flight. */
  private early: WirePublication[] = [];
  private syncScheduled = false;
  /** Bumped whenever an in-flight subscribe's answer stops mattering. */
  private attemptId = 0;
  private retries = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the gateway holds (or is about to hold) this subscription. */
  private onServer = false;
  /** Connected: the gateway restores this server-side subscription by itself (a push, or 2000). */
  private awaitingServer = false;
  /** Subscription tokens, for channels that take them. */
  private getToken: SubscriptionTokenSource | undefined;
  /** Sends `subRefresh` before the subscription token expires (only with `getToken`). */
  private tokenRefresher: TokenRefresher | undefined;
  /** The live handles, for `HeraldClient.unsubscribe(channel)`. */
  readonly handles = new Set<{ unsubscribe(): void }>();
  /** The presence state this connection wants in the channel (null: none). */
  presenceState: unknown = null;
  /** `setPresenceState` calls waiting for the next send's acknowledgement. */
  private stateWaiters: StateWaiter[] = [];
  private stateTimer: ReturnType<typeof setTimeout> | undefined;
  private stateSentAt = -Infinity;

  /** Creates the state of `channel`. */
  constructor(
    readonly channel: string,
    private readonly host: ChannelHost,
  ) {
    this.presence = new PresenceTracker({
      channel,
      isSubscribed: () => this.phase === "subscribed" && host.isConnected(),
      request: (method, params) => host.request(method, params),
    });
    this.typing = new TypingTracker(
      {
        channel,
        isSubscribed: () => this.phase === "subscribed" && host.isConnected(),
        send: (method, params) => host.send(method, params),
      },
      host.typingTimings,
    );
    this.presence.onError((error) => this.lifecycle.emit("error", error));
  }

  /** Adds a listener for publications of `event` ("*": every event). */
  listen(event: string, listener: PublicationListener): Unsubscribe {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    const entry: PublicationListener = (data, publication) => listener(data, publication);
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  /** Uses `getToken` for this channel's subscription tokens from now on. */
  setTokenSource(getToken: SubscriptionTokenSource): void {
    this.getToken = getToken;
    this.tokenRefresher ??= new TokenRefresher(this.host.refreshBeforeExpiryMs, {
      getToken: () => {
        const source = this.getToken;
        if (!source) throw new Error("no getToken");
        return source(this.channel);
      },
      refresh: (token) =>
        this.host.request<RefreshResult>("subRefresh", { channel: this.channel, token }),
      now: () => this.host.now(),
      refreshed: () => {},
      failed: (error) => this.lifecycle.emit("error", error),
    });
  }

  /** Drops every handle (their listeners too). */
  releaseHandles(): void {
    for (const handle of [...this.handles]) handle.unsubscribe();
  }

  /**
   * Sets this connection's presence state in the channel: coalesced to one send per 250 ms
   * (the last state wins), sent once subscribed, and again after every resubscribe.
   */
  setPresenceState(state: unknown): Promise<void> {
    const next = state === undefined ? null : state;
    const bytes = new TextEncoder().encode(JSON.stringify(next)).length;
    if (bytes > PRESENCE_STATE_BYTES) {
      return Promise.reject(
        new HeraldError(
          "message_too_large",
          `setPresenceState: ${bytes} bytes of JSON is over ${PRESENCE_STATE_BYTES}`,
          false,
        ),
      );
    }
    if (this.phase === "ended" || this.phase === "failed") {
      return Promise.reject(
        new HeraldError(
          "disconnected",
          `setPresenceState: ${this.channel} is not subscribed`,
          false,
        ),
      );
    }
    const changed = this.presenceState !== next;
    this.presenceState = next;
    if (changed) this.presence.notify();
    return new Promise<void>((resolve, reject) => {
      this.stateWaiters.push({ resolve, reject });
      this.scheduleState();
    });
  }

  private scheduleState(): void {
    if (this.stateTimer !== undefined) return;
    if (this.phase !== "subscribed" || !this.host.isConnected()) return;
    const wait = this.stateSentAt + PRESENCE_STATE_INTERVAL_MS - Date.now();
    if (wait > 0) {
      this.stateTimer = setTimeout(() => {
        this.stateTimer = undefined;
        this.scheduleState();
      }, wait);
      return;
    }
    const waiters = this.stateWaiters;
    this.stateWaiters = [];
    this.stateSentAt = Date.now();
    this.host
      .request("setPresenceState", { channel: this.channel, state: this.presenceState })
      .then(
        () => {
          for (const waiter of waiters) waiter.resolve();
        },
        (error: unknown) => {
          const heraldError =
            error instanceof HeraldError
              ? error
              : new HeraldError("transport", String(error), true);
          // The connection dropped: the resubscribe sends the state again and settles them.
          if (heraldError.code === "disconnected") {
            this.stateWaiters.push(...waiters);
            return;
          }
          for (const waiter of waiters) waiter.reject(heraldError);
        },
      );
  }

  /** The subscription ended: the state is gone, and whoever waits for it is told. */
  private dropPresenceState(): void {
    clearTimeout(this.stateTimer);
    this.stateTimer = undefined;
    this.presenceState = null;
    const waiters = this.stateWaiters;
    this.stateWaiters = [];
    const error = new HeraldError(
      "disconnected",
      `setPresenceState: ${this.channel} was unsubscribed`,
      false,
    );
    for (const waiter of waiters) waiter.reject(error);
  }

  /** One more handle; a subscription the gateway refused is tried again for it. */
  retain(): void {
    this.refs += 1;
    if (this.phase === "failed") this.phase = "pending";
    this.scheduleSync();
  }

  /** One handle fewer. */
  releaseRef(): void {
    if (this.refs > 0) this.refs -= 1;
    this.scheduleSync();
  }

  /** Runs {@link sync} once at the end of the current task. */
  scheduleSync(): void {
    if (this.syncScheduled) return;
    this.syncScheduled = true;
    queueMicrotask(() => {
      this.syncScheduled = false;
      this.sync();
    });
  }

  /** Brings the gateway in line with the handles: subscribe, unsubscribe, or nothing. */
  sync(): void {
    if (this.phase === "ended") return;
    if (this.refs === 0 && !this.serverSide) {
      this.end();
      return;
    }
    if (
      this.phase === "pending" &&
      !this.awaitingServer &&
      this.retryTimer === undefined &&
      this.host.isConnected()
    ) {
      this.subscribe();
    }
  }

  /** The client is connected (again): resubscribe, recovering from the last position. */
  connected(): void {
    if (this.phase === "ended") return;
    this.retries = 0;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.phase = "pending";
    this.awaitingServer = this.serverSide;
    this.sync();
  }

  /** The connection was lost: the gateway forgot the subscription. */
  disconnected(): void {
    this.tokenRefresher?.stop();
    clearTimeout(this.stateTimer);
    this.stateTimer = undefined;
    this.attemptId += 1;
    this.onServer = false;
    this.early = [];
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.phase !== "ended") this.phase = "pending";
    this.typing.suspend();
    this.presence.suspend();
  }

  /** A `pub` push for this channel. */
  publication(wire: WirePublication): void {
    if (this.phase === "subscribing") {
      this.early.push(wire);
    } else if (this.phase === "subscribed") {
      this.deliver(wire);
    }
  }

  /**
   * A `subscribe` push: the server subscribed the connection, or restored the server-side
   * subscription after a reconnect (recovering from the position sent in `connect`). Takes
   * over from a client subscribe in flight or refused (the gateway answers that one 105).
   */
  serverSubscribed(result: SubscribeResult): void {
    if (this.phase === "ended") return;
    this.serverSide = true;
    this.awaitingServer = false;
    // Subscribed already on this connection: the publications flow on.
    if (this.phase === "subscribed") return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const attempt = ++this.attemptId;
    const recover =
      this.position !== null && this.position.epoch !== "" ? { ...this.position } : undefined;
    this.phase = "subscribing";
    this.onServer = true;
    this.subscribed(result, recover, attempt);
  }

  /** A server-side `unsubscribe` push. */
  serverUnsubscribe(code: number, reason: string): void {
    if (this.phase === "ended") return;
    this.awaitingServer = false;
    this.tokenRefresher?.stop();
    this.attemptId += 1;
    this.onServer = false;
    this.early = [];
    this.typing.suspend();
    this.presence.suspend();
    // 2401 with `getToken`: the subscribe fetches a new token and recovers from the position.
    if (
      code === UnsubscribeCodes.resubscribe ||
      (code === UnsubscribeCodes.tokenExpired && this.getToken !== undefined)
    ) {
      this.phase = "pending";
      this.sync();
      return;
    }
    this.phase = "ended";
    this.presence.reset();
    this.dropPresenceState();
    this.host.release(this);
    this.lifecycle.emit("unsubscribed", { channel: this.channel, code, reason });
  }

  /** A `join`, `leave` or `typing` push for this channel. */
  presenceEvent(kind: "join" | "leave", wire: WirePresenceMember): void {
    if (this.phase !== "subscribed") return;
    if (kind === "join") this.presence.join(wire);
    else this.presence.leave(wire);
  }

  /** A `presence` push (batched joins and leaves) for this channel. */
  presenceDiff(diff: WirePresenceDiff): void {
    if (this.phase === "subscribed") this.presence.diff(diff);
  }

  /** A `state` push: a member's presence state changed. */
  presenceStateEvent(wire: WirePresenceState): void {
    if (this.phase === "subscribed") this.presence.state(wire);
  }

  /** A `typing` push for this channel. */
  typingEvent(wire: WireTyper): void {
    if (this.phase === "subscribed") this.typing.push(wire);
  }

  private subscribe(): void {
    const attempt = ++this.attemptId;
    const recover =
      this.position !== null && this.position.epoch !== "" ? { ...this.position } : undefined;
    this.phase = "subscribing";
    this.onServer = true;
    const params: { channel: string; token?: string; recover?: StreamPosition } = {
      channel: this.channel,
    };
    if (recover) params.recover = recover;
    const getToken = this.getToken;
    const reply =
      getToken === undefined
        ? this.host.request<SubscribeResult>("subscribe", params)
        : this.fetchToken(getToken).then((token) => {
            if (attempt !== this.attemptId) throw STALE;
            return this.host.request<SubscribeResult>("subscribe", { ...params, token });
          });
    reply.then(
      (result) => {
        if (attempt === this.attemptId) this.subscribed(result, recover, attempt);
      },
      (error: unknown) => {
        if (attempt === this.attemptId) this.refused(error);
      },
    );
  }

  /** A subscription token from the app; a failure is temporary (the subscribe is retried). */
  private async fetchToken(getToken: SubscriptionTokenSource): Promise<string> {
    try {
      return await getToken(this.channel);
    } catch (error: unknown) {
      const message = error instanceof Error ? error.message : String(error);
      throw new HeraldError("transport", `getToken(${this.channel}) failed: ${message}`, true);
    }
  }

  private subscribed(
    result: SubscribeResult,
    recover: StreamPosition | undefined,
    attempt: number,
  ): void {
    if (!recover || !result.recovered || !result.epoch) {
      this.activate(result, recover, false, 0);
      return;
    }
    let delivered = 0;
    for (const wire of result.publications ?? []) if (this.deliver(wire)) delivered += 1;
    if (result.more) {
      void this.recoverRest(result, recover, attempt, delivered);
      return;
    }
    this.activate(result, recover, true, delivered);
  }

  /**
   * Fetches what did not fit the subscribe reply (`more`) with `history`, page by page up to
   * the reply's offset, delivering each page in order. The phase stays `subscribing`, so live
   * pushes (past the reply's offset) wait in `early` until the last page is delivered.
   */
  private async recoverRest(
    result: SubscribeResult,
    recover: StreamPosition,
    attempt: number,
    delivered: number,
  ): Promise<void> {
    let last = result.publications.at(-1)?.offset ?? recover.offset;
    let failures = 0;
    while (last < result.offset) {
      let page: HistoryResult;
      try {
        page = await this.host.request<HistoryResult>("history", {
          channel: this.channel,
          sinceOffset: last,
        });
      } catch (error: unknown) {
        if (attempt !== this.attemptId) return;
        const heraldError =
          error instanceof HeraldError ? error : new HeraldError("transport", String(error), true);
        // The connection went away: `connected()` resubscribes from the last page delivered.
        if (heraldError.code === "disconnected" || heraldError.code === "client_closed") return;
        if (heraldError.temporary) {
          const delay = this.host.retryDelay(failures++);
          await new Promise((resolve) => setTimeout(resolve, delay));
          if (attempt !== this.attemptId) return;
          continue;
        }
        this.lifecycle.emit("error", heraldError);
        break;
      }
      if (attempt !== this.attemptId) return;
      const wires = page.publications ?? [];
      // A new epoch, or history trimmed past `last` meanwhile: the gap cannot be filled.
      if (page.epoch !== result.epoch || wires[0]?.offset !== last + 1) break;
      for (const wire of wires) {
        const offset = wire.offset ?? 0;
        if (offset > result.offset) break;
        if (this.deliver(wire)) delivered += 1;
        last = offset;
      }
    }
    this.activate(result, recover, last >= result.offset, delivered);
  }

  /** The subscription is active: set the position, deliver what waited, emit the events. */
  private activate(
    result: SubscribeResult,
    recover: StreamPosition | undefined,
    recovered: boolean,
    delivered: number,
  ): void {
    this.phase = "subscribed";
    this.retries = 0;
    if (result.expires) this.tokenRefresher?.start(result.expires);
    const early = this.early;
    this.early = [];
    if (result.epoch) {
      const position = this.position;
      if (
        !recovered ||
        !position ||
        position.epoch !== result.epoch ||
        position.offset < result.offset
      ) {
        this.position = { offset: result.offset, epoch: result.epoch };
      }
    } else {
      this.position = null;
    }
    for (const wire of early) this.deliver(wire);
    this.typing.reset(result.typing ?? []);
    const info: SubscribedInfo = {
      channel: this.channel,
      resubscribed: recover !== undefined,
      recovered,
      recoveredPublications: delivered,
      position: this.position ? { ...this.position } : { offset: 0, epoch: "" },
    };
    this.lifecycle.emit("subscribed", info);
    if (recover) this.lifecycle.emit(recovered ? "recovered" : "state_lost", info);
    if (recover && !recovered) {
      this.lifecycle.emit("sync_requested", info);
      this.host.syncRequested(info);
    }
    this.presence.subscribed();
    // The gateway forgot the state with the old subscription.
    if (this.presenceState !== null || this.stateWaiters.length > 0) {
      if (this.stateWaiters.length === 0) this.stateWaiters.push({ resolve() {}, reject() {} });
      this.scheduleState();
    }
  }

  private refused(error: unknown): void {
    const heraldError =
      error instanceof HeraldError ? error : new HeraldError("transport", String(error), true);
    if (heraldError.code === "disconnected" || heraldError.code === "client_closed") {
      // The connection went away meanwhile; `connected()` will resubscribe.
      return;
    }
    this.onServer = false;
    this.early = [];
    if (heraldError.temporary && this.host.isConnected()) {
      this.phase = "pending";
      const delay = this.host.retryDelay(this.retries++);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.sync();
      }, delay);
    } else {
      this.phase = "failed";
    }
    this.lifecycle.emit("error", heraldError);
  }

  /**
   * Delivers a publication unless it was delivered already (same epoch, offset not past
   * the last one seen); returns whether it was delivered.
   */
  private deliver(wire: WirePublication): boolean {
    const offset = wire.offset ?? 0;
    const epoch = wire.epoch ?? "";
    if (offset > 0) {
      const position = this.position;
      if (position && position.epoch === epoch && offset <= position.offset) return false;
      this.position = { offset, epoch };
    }
    const publication = toPublication(this.channel, wire);
    this.dispatch(wire.event, publication);
    this.dispatch("*", publication);
    return true;
  }

  private dispatch(event: string, publication: Publication): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(publication.data, publication);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** No handle left: unsubscribe on the gateway and forget the channel. */
  private end(): void {
    this.tokenRefresher?.stop();
    this.dropPresenceState();
    this.typing.stop();
    const wasOnServer = this.onServer;
    this.attemptId += 1;
    this.onServer = false;
    this.phase = "ended";
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.early = [];
    this.typing.suspend();
    this.presence.suspend();
    this.host.release(this);
    if (wasOnServer && this.host.isConnected()) {
      this.host.send("unsubscribe", { channel: this.channel });
    }
  }
}
