import { Backoff, jitter } from "./backoff.js";
import {
  ChannelState,
  type ChannelHost,
  type SubscribeOptions,
  type SubscriptionEvents,
} from "./channel.js";
import { Commands, WaitingCommands } from "./commands.js";
import { Emitter, type Unsubscribe } from "./emitter.js";
import { EnvironmentWatch } from "./environment.js";
import { HeraldError, type LocalErrorCode } from "./errors.js";
import type {
  ClientEvents,
  ConnectionState,
  History,
  HistoryOptions,
  QueryClientLike,
  TransportKind,
  UserStatusChange,
} from "./events.js";
import { Heartbeat } from "./heartbeat.js";
import { Outbox, type OutgoingPublish } from "./outbox.js";
import { resolveOptions, type HeraldOptions, type ResolvedOptions } from "./options.js";
import type { PresenceMember, SettableStatus } from "./presence.js";
import {
  decodeFrame,
  ErrorCodes,
  reconnectAdvice,
  type ConnectResult,
  type HistoryResult,
  type PingResult,
  type PresenceStatsResult,
  type PublishParams,
  type PublishResult,
  type ReconnectAdvice,
  type RefreshResult,
  type RpcResult,
  type StreamPosition,
  type SubscribeResult,
  type WirePush,
} from "./protocol.js";
import { toPublication, type EventMap, type Publication } from "./publication.js";
import { BoundedQueue } from "./queue.js";
import { TokenRefresher } from "./refresh.js";
import { Subscription } from "./subscription.js";
import { createSseTransport, sseEndpoints, type SseClose } from "./transport/sse.js";
import type { Transport, TransportClose } from "./transport/types.js";
import { TransportSelector } from "./transport/select.js";
import { createWebSocketTransport } from "./transport/websocket.js";
import type { Typer } from "./typing.js";

/** Options of {@link HeraldClient.publish}. */
export interface PublishOptions {
  /**
   * The publish's idempotency key (at most 256 bytes): the gateway applies one publish per
   * key and user within 5 minutes. Default: a random one per publish, reused by its retries.
   */
  idempotencyKey?: string;
}

/** What {@link HeraldClient.presenceStats} answers. */
export type PresenceStats = PresenceStatsResult;

/** Handlers by event name, for {@link HeraldClient.subscribeToChannel}. */
export type ChannelHandlers<E extends EventMap = EventMap> = {
  [K in keyof E & string]?: (data: E[K], publication: Publication<E[K]>) => void;
} & { [K in keyof SubscriptionEvents]?: SubscriptionEvents[K] };

/** A command that waits in the offline queue for the next connect. */
interface Queued {
  method: "publish" | "rpc";
  params: unknown;
  /** The reply timeout once sent. */
  timeoutMs: number;
  resolve: (value: unknown) => void;
  reject: (error: HeraldError) => void;
}

/** Options of {@link HeraldClient.rpc}. */
export interface RpcOptions {
  /** How long to wait for the reply once the call is sent, ms. Default: `commandTimeoutMs`. */
  timeout?: number;
}

/** How long to wait for the close after a `disconnect` push before closing ourselves. */
const DISCONNECT_GRACE_MS = 2000;
const EMPTY: readonly never[] = Object.freeze([]);

/**
 * A Herald connection: one WebSocket (or SSE fallback) session, reconnected by the close
 * codes' rules, with every channel resubscribed and recovered after each reconnect. Create
 * it with {@link createClient}.
 */
export class HeraldClient {
  private readonly options: ResolvedOptions;
  private readonly events = new Emitter<ClientEvents>();
  private readonly stateListeners = new Emitter<{
    change: (state: ConnectionState, previous: ConnectionState) => void;
  }>();
  private readonly channels = new Map<string, ChannelState>();
  private readonly host: ChannelHost;
  private readonly backoff: Backoff;
  private readonly commands = new Commands();
  private readonly waiting = new WaitingCommands();
  private readonly queue: BoundedQueue<Queued>;
  private readonly outbox: Outbox;
  /** `connect()` promises waiting for the session (or a fatal close). */
  private connectWaiters: { resolve: () => void; reject: (error: HeraldError) => void }[] = [];
  /** `connect()` (or a lazy connect) ran, or `disconnect()` did: no more lazy connects. */
  private started = false;
  private readonly heartbeat: Heartbeat;
  private readonly refresher: TokenRefresher;

  private state: ConnectionState = "disconnected";
  /** Bumped for each transport; callbacks of older ones are ignored. */
  private generation = 0;
  private transport: Transport | null = null;
  /** The binary codec, loaded on the first connect with `protocol: "protobuf"`. */
  private codec: typeof import("./codec.js") | null = null;
  private transportKind: TransportKind | null = null;
  private session: ConnectResult | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private disconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private disconnectPush: { code: number; reason: string } | null = null;
  /**
   * Pushes that came before the `connect` reply was handled (the gateway may send the
   * restored server-side subscriptions in the same frame as the reply).
   */
  private heldPushes: WirePush[] = [];

  private token: string | null = null;
  /** The cached token must not be used again (the gateway said it expired). */
  private tokenStale = false;
  /** Whether the current attempt's token came from `getToken` just now. */
  private tokenFresh = false;

  private desiredStatus: SettableStatus | null = null;

  private readonly transports: TransportSelector;
  private readonly environment = new EnvironmentWatch(
    () => this.backOnline(),
    () => this.wentOffline(),
  );

  /** Use {@link createClient}. */
  constructor(options: HeraldOptions) {
    this.options = resolveOptions(options);
    this.backoff = new Backoff(this.options.backoff, this.options.random);
    this.queue = new BoundedQueue(this.options.offlineQueueSize);
    this.outbox = new Outbox(
      {
        isConnected: () => this.state === "connected",
        send: (params) => this.send<PublishResult>("publish", params),
        changed: () => this.persistQueue(),
      },
      this.options.publishesPerSecond,
    );
    this.transports = new TransportSelector(
      this.options.transport,
      this.options.WebSocket !== undefined,
      this.options.fetch !== undefined,
    );
    this.heartbeat = new Heartbeat(
      {
        intervalMs: this.options.pingIntervalMs,
        timeoutMs: this.options.pingTimeoutMs,
        degradedLatencyMs: this.options.degradedLatencyMs,
      },
      this.events,
    );
    this.refresher = new TokenRefresher(this.options.refreshBeforeExpiryMs, {
      getToken: () => this.options.getToken(),
      refresh: (token) => this.send<RefreshResult>("refresh", { token }),
      now: () => Date.now() + this.heartbeat.skewMs,
      refreshed: (token, expires) => {
        this.token = token;
        this.tokenStale = false;
        if (this.session) this.session = { ...this.session, expires };
        this.events.emit("token_refreshed", { expires });
      },
      failed: (error) => this.events.emit("error", error),
    });
    this.host = {
      isConnected: () => this.state === "connected",
      request: <T>(method: string, params: unknown) =>
        this.state === "connected"
          ? this.send<T>(method, params)
          : Promise.reject(notConnected(method)),
      send: (method, params) => {
        if (this.state !== "connected") return;
        this.send(method, params).catch((error: unknown) => {
          if (error instanceof HeraldError && error.code !== "disconnected") {
            this.events.emit("error", error);
          }
        });
      },
      now: () => Date.now() + this.heartbeat.skewMs,
      refreshBeforeExpiryMs: this.options.refreshBeforeExpiryMs,
      retryDelay: (attempt) =>
        Math.min(1000 * 2 ** attempt, 30000) + jitter(1000, this.options.random),
      release: (channel) => {
        if (this.channels.get(channel.channel) === channel) this.channels.delete(channel.channel);
      },
      typingTimings: {
        throttleMs: this.options.typingThrottleMs,
        idleMs: this.options.typingIdleMs,
        expiryMs: this.options.typingExpiryMs,
      },
      syncRequested: (info) => this.events.emit("sync_requested", info),
    };
    this.restoreQueue();
    if (this.options.autoConnect) this.connect().catch(() => {});
  }

  // ---- connection --------------------------------------------------------------------

  /**
   * Connects, and resolves once connected. Idempotent: while connected it resolves at once,
   * while trying it waits for the same attempt. Rejects (a {@link HeraldError} `disconnected`,
   * not temporary) on a close that stops the client (4000–4099 but 4002 and 4009), when
   * reconnecting gives up (`permanently_disconnected`), or on `disconnect()`
   * (`client_closed`). Starts over after `permanently_disconnected` and `disconnected`.
   * Ignoring the promise is fine: a rejection nobody awaits is not reported as unhandled.
   */
  connect(): Promise<void> {
    this.started = true;
    if (this.state === "connected") return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => {
      this.connectWaiters.push({ resolve, reject });
    });
    promise.catch(() => {});
    if (this.state !== "connecting" && this.state !== "reconnecting" && this.state !== "offline") {
      this.backoff.reset();
      this.transports.reset();
      this.environment.attach(true);
      if (EnvironmentWatch.isOffline()) {
        this.setState("offline");
      } else {
        this.setState("connecting");
        void this.open();
      }
    }
    return promise;
  }

  /** Settles the `connect()` promises. */
  private settleConnect(error: HeraldError | null): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) {
      if (error) waiter.reject(error);
      else waiter.resolve();
    }
  }

  /**
   * Closes the connection and stops reconnecting. Stops this client's typing indicators;
   * queued publishes and pending commands fail with `client_closed`. Subscriptions are kept
   * and resume (recovering) on the next `connect()`.
   */
  disconnect(): void {
    if (this.state === "connected") {
      for (const channel of this.channels.values()) channel.typing.stop();
    }
    this.started = true;
    this.generation += 1;
    const transport = this.transport;
    this.teardown("client_closed");
    transport?.close(1000, "client disconnect");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const error = new HeraldError("client_closed", "the client disconnected", false);
    this.waiting.failAll(error);
    this.outbox.failAll(error);
    for (const item of this.queue.drain()) item.reject(error);
    this.persistQueue();
    this.settleConnect(error);
    this.environment.attach(false);
    const was = this.state;
    this.setState("disconnected");
    if (was === "connected") {
      this.events.emit("disconnected", {
        code: 1000,
        reason: "client disconnect",
        advice: "manual",
      });
    }
  }

  /** Where the connection stands. */
  getConnectionState(): ConnectionState {
    return this.state;
  }

  /** Calls `listener` on every change of {@link getConnectionState}. */
  onConnectionChange(
    listener: (state: ConnectionState, previous: ConnectionState) => void,
  ): Unsubscribe {
    return this.stateListeners.on("change", listener);
  }

  /** The last ping round trip, ms; null before the first. */
  getLatency(): number | null {
    return this.heartbeat.latency;
  }

  /** Whether the last round trip was over `degradedLatencyMs`. */
  isDegraded(): boolean {
    return this.heartbeat.degraded;
  }

  /** The connection id while connected. */
  getClientId(): string | null {
    return this.session?.client ?? null;
  }

  /** The user id (token `sub`) while connected. */
  getUserId(): string | null {
    return this.session?.user ?? null;
  }

  /** The transport of the current connection, or null. */
  getTransport(): TransportKind | null {
    return this.state === "connected" ? this.transportKind : null;
  }

  /** Listens to a client event (`connection_degraded`, `connection_recovered`, `queue_overflow`…). */
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): Unsubscribe {
    return this.events.on(event, listener);
  }

  /** Removes `listener` from a client event (every time it was added), like the function `on` returns. */
  off<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): void {
    this.events.off(event, listener);
  }

  // ---- channels ----------------------------------------------------------------------

  /**
   * Subscribes to `channel` and returns a new handle on it. The channel is subscribed once
   * on the gateway however many handles exist; it is unsubscribed when the last handle's
   * `unsubscribe()` runs (coalesced within a task, so React StrictMode's mount–unmount–mount
   * sends one `subscribe`). Subscriptions made while offline start when connected.
   * For channels authorised by subscription tokens, pass `token` or `getToken` (see
   * {@link SubscribeOptions}). The first subscribe on a client that was never connected (nor
   * disconnected) connects it.
   *
   * @typeParam E - event name → type of its `data`.
   */
  subscribe<E extends EventMap = EventMap>(
    channel: string,
    options?: SubscribeOptions,
  ): Subscription<E> {
    let state = this.channels.get(channel);
    if (!state) {
      state = new ChannelState(channel, this.host);
      this.channels.set(channel, state);
    }
    if (options?.getToken) state.setTokenSource(options.getToken);
    else if (options?.token !== undefined) {
      const token = options.token;
      state.setTokenSource(() => token);
    }
    const subscription = new Subscription<E>(state);
    if (!this.started) this.connect().catch(() => {});
    return subscription;
  }

  /**
   * Subscribes to `channel` with a handler per event (publication events, or the lifecycle
   * events `subscribed`, `recovered`, `state_lost`, `sync_requested`, `unsubscribed`,
   * `error`), and returns the handle.
   */
  subscribeToChannel<E extends EventMap = EventMap>(
    channel: string,
    handlers: ChannelHandlers<E>,
    options?: SubscribeOptions,
  ): Subscription<E> {
    const subscription = this.subscribe<E>(channel, options);
    for (const [event, handler] of Object.entries(handlers)) {
      if (typeof handler === "function") {
        (subscription.on as (event: string, listener: (...args: any[]) => void) => Unsubscribe)(
          event,
          handler as (...args: any[]) => void,
        );
      }
    }
    return subscription;
  }

  /**
   * Drops every handle on `channel` (their listeners too): the gateway subscription ends.
   * A server-side subscription stays (the server ends those).
   */
  unsubscribe(channel: string): void {
    this.channels.get(channel)?.releaseHandles();
  }

  /** The channels with at least one live handle, and the server-side subscriptions. */
  getChannels(): string[] {
    return [...this.channels.keys()];
  }

  /**
   * The channels the server subscribed this client to (gRPC `Subscribe`; see the
   * `server_subscribed` and `server_unsubscribed` events). `subscribe(channel)` gives a
   * handle on one without sending anything; dropping handles does not end it, the server does.
   */
  getServerSubscriptions(): string[] {
    return [...this.channels.values()].filter((c) => c.serverSide).map((c) => c.channel);
  }

  /**
   * The presence members of a subscribed channel as last fetched (empty when not subscribed,
   * or before a handle's `presence` was used: that starts tracking).
   */
  getPresence(channel: string): readonly PresenceMember[] {
    return this.channels.get(channel)?.presence.peek() ?? EMPTY;
  }

  /**
   * How many users and connections are in a subscribed channel's presence (protocol
   * `presenceStats`); waits for the connection while connecting.
   */
  presenceStats(channel: string): Promise<PresenceStats> {
    return this.request<PresenceStatsResult>("presenceStats", { channel });
  }

  /** Who is typing in a subscribed channel (empty when not subscribed). */
  getTypers(channel: string): readonly Typer[] {
    return this.channels.get(channel)?.typing.getTypers() ?? EMPTY;
  }

  /**
   * Publishes an event from the client, where the channel's namespace allows it
   * (`client_publish`); the gateway stamps the sender and the time. While not connected the
   * publish waits in the offline queue (at most `offlineQueueSize`, oldest dropped with a
   * `queue_overflow` event) and goes out, in order, after the next connect. At most
   * `publishesPerSecond` (10) go out per channel per second; the excess waits, in order.
   * Every publish carries an idempotency key: one sent but not answered when the connection
   * dropped is sent again after the reconnect with the same key (applied once), so it
   * rejects only on the gateway's error, a timeout, `disconnect()`, or `message_too_large`
   * (over `maxMessageBytes`, checked before sending).
   */
  publish(
    channel: string,
    event: string,
    data: unknown,
    options: PublishOptions = {},
  ): Promise<PublishResult> {
    const params = {
      channel,
      event,
      data,
      idempotencyKey: options.idempotencyKey ?? idempotencyKey(),
    };
    const tooLarge = this.oversize("publish", params);
    if (tooLarge) return Promise.reject(tooLarge);
    return new Promise<PublishResult>((resolve, reject) => {
      const item: OutgoingPublish = { params, resolve, reject };
      if (this.state === "connected") this.outbox.add(item);
      else
        this.enqueue({
          method: "publish",
          params,
          timeoutMs: this.options.commandTimeoutMs,
          resolve: resolve as (value: unknown) => void,
          reject,
        });
    });
  }

  /**
   * Calls `method` on the app's backend through the gateway (protocol command `rpc`) and
   * resolves with the `data` it returned (null when none). Fails with a {@link HeraldError}:
   * the backend's own error code (1000 and up) and message as it sent them, or the gateway's
   * (104 method not allowed, 108 rpc not configured, 110 too many requests, 112 backend
   * unavailable, 113 backend timeout). Offline it waits in the offline queue like a publish
   * (in order with them), and a call sent but not answered when the connection dropped fails
   * with `disconnected` (the backend may or may not have run it).
   *
   * @typeParam T - what the method returns (not checked: your backend's contract).
   */
  async rpc<T = unknown>(method: string, data?: unknown, options: RpcOptions = {}): Promise<T> {
    const params = data === undefined ? { method } : { method, data };
    const tooLarge = this.oversize("rpc", params);
    if (tooLarge) throw tooLarge;
    const result = await this.sendOrQueue<RpcResult>("rpc", params, options.timeout);
    return (result.data ?? null) as T;
  }

  /**
   * Sends a publish or an rpc now, or queues it for the next connect (dropping the oldest
   * queued one when full).
   */
  private sendOrQueue<T>(
    method: Queued["method"],
    params: unknown,
    timeoutMs = this.options.commandTimeoutMs,
  ): Promise<T> {
    if (this.state === "connected") return this.send<T>(method, params, timeoutMs);
    return new Promise<T>((resolve, reject) => {
      this.enqueue({
        method,
        params,
        timeoutMs,
        resolve: resolve as (value: unknown) => void,
        reject,
      });
    });
  }

  /** Puts a command in the offline queue, dropping the oldest when full. */
  private enqueue(queued: Queued): void {
    for (const item of this.queue.push(queued)) {
      item.reject(
        new HeraldError(
          "queue_overflow",
          `${item.method} dropped: the offline queue is full`,
          true,
        ),
      );
      if (item.method === "publish") {
        const { channel, event, data } = item.params as PublishParams;
        this.events.emit("queue_overflow", { channel, event, data });
      }
    }
    if (queued.method === "publish") this.persistQueue();
  }

  /** The local error for a command over `maxMessageBytes`, or null when it fits. */
  private oversize(method: string, params: unknown): HeraldError | null {
    const bytes = commandBytes(method, params);
    if (bytes <= this.options.maxMessageBytes) return null;
    return new HeraldError(
      "message_too_large",
      `${method}: ${bytes} bytes is over the ${this.options.maxMessageBytes}-byte message limit`,
      false,
    );
  }

  /** Saves the unsent publishes (with `persistOfflineQueue`). */
  private persistQueue(): void {
    const persistence = this.options.persistence;
    if (!persistence) return;
    const publishes = [
      ...this.outbox.items().map((item) => item.params),
      ...this.queue
        .peek()
        .filter((item) => item.method === "publish")
        .map((item) => item.params as PublishParams),
    ];
    try {
      if (publishes.length === 0) persistence.storage.removeItem(persistence.key);
      else persistence.storage.setItem(persistence.key, JSON.stringify(publishes));
    } catch (error) {
      // A full or blocked storage loses only the persistence, not the publishes.
      this.events.emit(
        "error",
        new HeraldError("transport", `saving the offline queue failed: ${describe(error)}`, true),
      );
    }
  }

  /** Queues the publishes a previous page left unsent (with `persistOfflineQueue`). */
  private restoreQueue(): void {
    const persistence = this.options.persistence;
    if (!persistence) return;
    let saved: unknown;
    try {
      saved = JSON.parse(persistence.storage.getItem(persistence.key) ?? "[]");
    } catch {
      saved = [];
    }
    if (!Array.isArray(saved)) return;
    for (const entry of saved as Partial<PublishParams>[]) {
      if (typeof entry?.channel !== "string" || typeof entry.event !== "string") continue;
      const params = {
        channel: entry.channel,
        event: entry.event,
        data: entry.data ?? null,
        idempotencyKey:
          typeof entry.idempotencyKey === "string" ? entry.idempotencyKey : idempotencyKey(),
      };
      this.enqueue({
        method: "publish",
        params,
        timeoutMs: this.options.commandTimeoutMs,
        resolve: () => {},
        reject: (error) => this.events.emit("error", error),
      });
    }
  }

  /**
   * Publications kept in a channel's history after `sinceOffset`, oldest first: at most
   * `limit`, up to the channel's offset when the first page was read. The gateway answers
   * in pages bounded by bytes; this asks for pages until `limit` or that offset is reached.
   */
  async history<T = unknown>(channel: string, options: HistoryOptions = {}): Promise<History<T>> {
    const publications: Publication<T>[] = [];
    // 0 means the gateway's default, as when it is left out.
    const limit = options.limit || undefined;
    let since = options.sinceOffset;
    let first: HistoryResult | undefined;
    for (;;) {
      const params: { channel: string; limit?: number; sinceOffset?: number } = { channel };
      if (limit !== undefined) params.limit = limit - publications.length;
      if (since !== undefined) params.sinceOffset = since;
      const page = await this.request<HistoryResult>("history", params);
      first ??= page;
      if (page.epoch !== first.epoch) {
        return { publications, offset: first.offset, epoch: first.epoch, more: true };
      }
      for (const wire of page.publications ?? []) {
        if ((wire.offset ?? 0) > first.offset) break;
        publications.push(toPublication<T>(channel, wire));
        since = wire.offset;
      }
      const last = publications.at(-1)?.offset ?? options.sinceOffset ?? 0;
      const full = limit !== undefined && publications.length >= limit;
      if (!page.more || full || last >= first.offset || (page.publications ?? []).length === 0) {
        return { publications, offset: first.offset, epoch: first.epoch, more: false };
      }
    }
  }

  /**
   * Sets the user's status (`online`, `away`, `busy`) in every org of their token, for all
   * their connections (protocol method `setStatus`). Remembered and sent again after each
   * reconnect; while not connected the promise resolves at once.
   */
  async setStatus(status: SettableStatus): Promise<void> {
    this.desiredStatus = status;
    if (this.state !== "connected") return;
    await this.send("setStatus", { status });
  }

  /** The user's status: the same as {@link setStatus}. */
  setPresenceState(status: SettableStatus): Promise<void>;
  /**
   * Attaches a small JSON `state` to this connection's presence in a subscribed `channel`
   * (null clears it), shown to the channel's members (`state` of {@link PresenceMember}).
   * Resolves when the gateway acknowledged it. Calls closer than 250 ms apart are coalesced
   * (the last state goes out); a state over 1024 bytes of JSON rejects with
   * `message_too_large`. Sent again after each resubscribe while the channel is subscribed.
   */
  setPresenceState(channel: string, state: unknown): Promise<void>;
  setPresenceState(first: string, state?: unknown): Promise<void> {
    if (arguments.length < 2) return this.setStatus(first as SettableStatus);
    const channel = this.channels.get(first);
    if (!channel) return Promise.reject(notConnected("setPresenceState"));
    return channel.setPresenceState(state);
  }

  /** The state this connection set in `channel`'s presence (null: none). */
  getPresenceState(channel: string): unknown {
    return this.channels.get(channel)?.presenceState ?? null;
  }

  /**
   * Invalidates TanStack Query queries when `event` is published on `channel` (the "send
   * ids, refetch with your API" pattern): `toQueryKey` maps the publication to a query key,
   * or to null to skip it. Returns a function that stops it (and drops the subscription).
   */
  invalidateOn<T = unknown>(
    queryClient: QueryClientLike,
    channel: string,
    event: string,
    toQueryKey: (data: T, publication: Publication<T>) => unknown[] | null | undefined,
  ): Unsubscribe {
    const subscription = this.subscribe<Record<string, T>>(channel);
    subscription.on(event, (data, publication) => {
      const queryKey = toQueryKey(data, publication);
      if (!queryKey) return;
      const result = queryClient.invalidateQueries({ queryKey });
      // A refetch failure is the query's business, not an unhandled rejection here.
      if (result instanceof Promise) result.catch(() => {});
    });
    return () => subscription.unsubscribe();
  }

  // ---- commands ----------------------------------------------------------------------

  /**
   * Sends a command and resolves with its result. While connecting it waits for the
   * connection (within the command timeout); while disconnected it fails at once.
   */
  private request<T>(method: string, params: unknown): Promise<T> {
    if (this.state === "connected") return this.send<T>(method, params);
    if (this.state !== "connecting" && this.state !== "reconnecting") {
      return Promise.reject(notConnected(method));
    }
    return this.waiting.hold<T>(method, params, this.options.commandTimeoutMs);
  }

  /** Sends a command on the current transport. */
  private send<T>(
    method: string,
    params: unknown,
    timeoutMs = this.options.commandTimeoutMs,
  ): Promise<T> {
    const transport = this.transport;
    if (!transport) return Promise.reject(notConnected(method));
    return this.commands.send<T>(transport, method, params, timeoutMs);
  }

  // ---- connection lifecycle ----------------------------------------------------------

  private async open(): Promise<void> {
    const generation = ++this.generation;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    let token: string;
    try {
      token = await this.currentToken();
    } catch (error) {
      if (generation !== this.generation) return;
      this.events.emit(
        "error",
        new HeraldError("transport", `getToken failed: ${describe(error)}`, true),
      );
      this.afterClose("backoff", false);
      return;
    }
    if (generation !== this.generation) return;
    const kind = this.transports.pick();
    if (kind === "websocket" && this.options.protocol === "protobuf" && !this.codec) {
      try {
        this.codec = await import("./codec.js");
      } catch (error) {
        if (generation !== this.generation) return;
        this.events.emit(
          "error",
          new HeraldError(
            "transport",
            `loading the protobuf codec failed: ${describe(error)}`,
            true,
          ),
        );
        this.afterClose("backoff", false);
        return;
      }
      if (generation !== this.generation) return;
    }
    this.transportKind = kind;
    const handlers = {
      onOpen: () => {
        if (generation === this.generation) this.opened(generation, token);
      },
      onFrame: (frame: string | Uint8Array) => {
        if (generation === this.generation) this.frame(frame);
      },
      onClose: (close: TransportClose) => {
        if (generation === this.generation) this.closed(close, kind);
      },
    };
    if (kind === "websocket") {
      this.transport = createWebSocketTransport(
        this.options.WebSocket as NonNullable<ResolvedOptions["WebSocket"]>,
        this.options.url,
        handlers,
        this.codec?.encodeBinaryCommands,
      );
    } else {
      const derived = sseEndpoints(this.options.url);
      this.transport = createSseTransport(
        this.options.fetch as NonNullable<ResolvedOptions["fetch"]>,
        {
          streamUrl: this.options.sseUrl ?? derived.streamUrl,
          rpcUrl: this.options.rpcUrl ?? derived.rpcUrl,
        },
        handlers,
      );
    }
  }

  /** The token for the next connect: the cached one unless stale, else a fresh one. */
  private async currentToken(): Promise<string> {
    if (this.token !== null && !this.tokenStale) {
      this.tokenFresh = false;
      return this.token;
    }
    const token = await this.options.getToken();
    if (typeof token !== "string" || token === "") {
      throw new TypeError("getToken returned no token");
    }
    this.token = token;
    this.tokenStale = false;
    this.tokenFresh = true;
    return token;
  }

  /** The transport is open: authenticate. */
  private opened(generation: number, token: string): void {
    const params: {
      token: string;
      name: string;
      version: string;
      subs?: Record<string, StreamPosition>;
    } = { token, name: this.options.name, version: this.options.version };
    const subs = this.serverPositions();
    if (subs) params.subs = subs;
    this.send<ConnectResult>("connect", params).then(
      (result) => {
        if (generation === this.generation) this.connected(generation, result);
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        if (error instanceof HeraldError) {
          if (error.code === ErrorCodes.tokenExpired) this.tokenStale = true;
          if (error.code === "timeout") this.abandon(1006, "connect timed out");
        }
        // Otherwise the gateway closes the connection with the code that says what to do.
      },
    );
  }

  /**
   * Where each server-side subscription stands, for the gateway to restore and recover them
   * (offset 0 and epoch "" on channels without history); undefined when there are none.
   */
  private serverPositions(): Record<string, StreamPosition> | undefined {
    let subs: Record<string, StreamPosition> | undefined;
    for (const state of this.channels.values()) {
      if (!state.serverSide) continue;
      subs ??= {};
      subs[state.channel] = state.position ? { ...state.position } : { offset: 0, epoch: "" };
    }
    return subs;
  }

  private connected(generation: number, result: ConnectResult): void {
    this.session = result;
    this.backoff.reset();
    this.transports.connected();
    this.setState("connected");
    this.settleConnect(null);
    this.refresher.start(result.expires);
    this.heartbeat.start(
      (timeoutMs) => this.send<PingResult>("ping", {}, timeoutMs),
      () => {
        if (generation === this.generation) this.abandon(4202, "no ping reply");
      },
    );
    for (const channel of [...this.channels.values()]) channel.connected();
    const held = this.heldPushes;
    this.heldPushes = [];
    for (const push of held) this.push(push);
    if (this.desiredStatus !== null) {
      this.host.send("setStatus", { status: this.desiredStatus });
    }
    this.waiting.flush((method, params) => this.send(method, params));
    // Publishes left from the last connection first: they are older than the queued ones.
    this.outbox.connected();
    for (const item of this.queue.drain()) {
      if (item.method === "publish") {
        this.outbox.add({
          params: item.params as OutgoingPublish["params"],
          resolve: item.resolve,
          reject: item.reject,
        });
      } else {
        this.send(item.method, item.params, item.timeoutMs).then(item.resolve, item.reject);
      }
    }
    this.events.emit("connected", {
      clientId: result.client,
      userId: result.user,
      node: result.node,
      transport: this.transportKind ?? "websocket",
      expires: result.expires,
    });
  }

  private frame(frame: string | Uint8Array): void {
    const messages =
      typeof frame === "string" ? decodeFrame(frame) : (this.codec?.decodeBinaryFrame(frame) ?? []);
    for (const message of messages) {
      if (message.push) {
        if (this.session !== null || message.push.disconnect) this.push(message.push);
        else this.heldPushes.push(message.push);
      } else if (typeof message.id === "number") this.commands.reply(message);
    }
  }

  private push(push: WirePush): void {
    if (push.disconnect) {
      // Sent just before the close, for clients behind proxies that drop close frames.
      this.disconnectPush = { code: push.disconnect.code, reason: push.disconnect.reason };
      clearTimeout(this.disconnectTimer);
      const { code, reason } = this.disconnectPush;
      this.disconnectTimer = setTimeout(() => this.abandon(code, reason), DISCONNECT_GRACE_MS);
      return;
    }
    const name = push.channel;
    if (!name) return;
    if (push.status) {
      this.status(name, push.status.user, push.status.status, push.status.lastSeen);
      return;
    }
    if (push.subscribe) {
      this.serverSubscribe(name, push.subscribe);
      return;
    }
    const channel = this.channels.get(name);
    if (!channel) return;
    if (push.pub) channel.publication(push.pub);
    else if (push.unsubscribe) {
      const { code, reason } = push.unsubscribe;
      const serverSide = channel.serverSide;
      channel.serverUnsubscribe(code, reason);
      if (serverSide && channel.phase === "ended") {
        this.events.emit("server_unsubscribed", { channel: name, code, reason });
      }
    } else if (push.join) channel.presenceEvent("join", push.join);
    else if (push.leave) channel.presenceEvent("leave", push.leave);
    else if (push.presence) channel.presenceDiff(push.presence);
    else if (push.typing) channel.typingEvent(push.typing);
    else if (push.state) channel.presenceStateEvent(push.state);
  }

  /** A `subscribe` push: the server subscribed this connection to `name`, or restored it. */
  private serverSubscribe(name: string, result: SubscribeResult): void {
    let state = this.channels.get(name);
    if (!state) {
      state = new ChannelState(name, this.host);
      this.channels.set(name, state);
    }
    const added = !state.serverSide;
    state.serverSide = true;
    // Before the subscription activates, so that handles made in the listener see it all.
    if (added) this.events.emit("server_subscribed", { channel: name });
    state.serverSubscribed(result);
  }

  private status(channel: string, user: string, status: string, lastSeen?: number): void {
    const segments = channel.split(":");
    if (segments[0] !== "org" || segments.length !== 2) return;
    const org = segments[1] as string;
    if (status === "online" || status === "away" || status === "busy" || status === "offline") {
      const change: UserStatusChange = { org, userId: user, status };
      if (lastSeen) change.lastSeen = lastSeen;
      this.events.emit("status", change);
    }
    const prefix = `${channel}:`;
    for (const state of this.channels.values()) {
      if (state.channel === channel) state.presence.status(user, status, true);
      else if (state.channel.startsWith(prefix)) state.presence.status(user, status, false);
    }
  }

  /** The transport ended by itself. */
  private closed(close: TransportClose, kind: TransportKind): void {
    const wasConnected = this.state === "connected";
    const pushed = this.disconnectPush;
    this.transport = null;
    this.teardown("disconnected");
    let code = close.code;
    let reason = close.reason;
    if ((code < 4000 || code > 4999) && pushed) {
      code = pushed.code;
      reason = pushed.reason;
    }
    this.transports.closed(kind, close as SseClose);
    const advice = reconnectAdvice(code);
    if (code === 4001) this.tokenStale = true;
    this.afterClose(advice, wasConnected);
    this.events.emit("disconnected", { code, reason, advice });
  }

  /** Closes the transport ourselves and carries on as if it closed with `code`. */
  private abandon(code: number, reason: string): void {
    const transport = this.transport;
    if (!transport) return;
    transport.close(1000, reason);
    this.closed({ code, reason, opened: true }, transport.kind);
  }

  /** Decides what follows a close. */
  private afterClose(advice: ReconnectAdvice, wasConnected: boolean): void {
    switch (advice) {
      case "stop": {
        const error = new HeraldError("disconnected", "the gateway closed the connection", false);
        this.waiting.failAll(error);
        this.setState("disconnected");
        this.settleConnect(error);
        return;
      }
      case "refresh_token":
        this.tokenStale = true;
        // A token fetched just now that is already expired (a clock off, a stale token
        // cache in the app) must not make a tight loop: back off then.
        if (wasConnected || !this.tokenFresh) {
          this.reconnectIn(0);
          return;
        }
        break;
      case "now":
        if (wasConnected) {
          this.reconnectIn(jitter(this.options.backoff.jitterMs, this.options.random));
          return;
        }
        break;
      case "backoff":
        break;
    }
    if (this.backoff.exhausted) {
      const error = new HeraldError("disconnected", "gave up reconnecting", false);
      this.waiting.failAll(error);
      this.setState("permanently_disconnected");
      this.events.emit("permanently_disconnected", { attempts: this.backoff.failures });
      this.settleConnect(error);
      return;
    }
    this.reconnectIn(this.backoff.next());
  }

  private reconnectIn(delay: number): void {
    this.setState("reconnecting");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.open();
    }, delay);
  }

  /** Forgets the connection: timers, pending commands, subscriptions' server state. */
  private teardown(code: LocalErrorCode): void {
    this.heartbeat.stop();
    this.refresher.stop();
    clearTimeout(this.disconnectTimer);
    this.disconnectTimer = undefined;
    this.disconnectPush = null;
    this.transport = null;
    this.session = null;
    this.heldPushes = [];
    this.outbox.disconnected();
    this.commands.failAll(code);
    for (const channel of this.channels.values()) channel.disconnected();
  }

  // ---- environment -------------------------------------------------------------------

  private setState(state: ConnectionState): void {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.stateListeners.emit("change", state, previous);
  }

  /**
   * The browser says the network is gone: drop the connection (it would only time out) and
   * wait for `online` instead of spending reconnect attempts.
   */
  private wentOffline(): void {
    if (
      this.state !== "connected" &&
      this.state !== "connecting" &&
      this.state !== "reconnecting"
    ) {
      return;
    }
    const wasConnected = this.state === "connected";
    this.generation += 1;
    const transport = this.transport;
    this.teardown("disconnected");
    transport?.close(1000, "offline");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.setState("offline");
    if (wasConnected) {
      this.events.emit("disconnected", { code: 1006, reason: "offline", advice: "backoff" });
    }
  }

  /** The network is back: reconnect now. */
  private backOnline(): void {
    if (this.state === "offline") {
      this.backoff.reset();
      this.setState("reconnecting");
      void this.open();
      return;
    }
    this.retryNow();
  }

  /** Tries at once instead of waiting out the backoff. */
  private retryNow(): void {
    if (this.state === "reconnecting" && this.reconnectTimer !== undefined) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      void this.open();
    }
  }
}

/**
 * Creates a client. It does not connect until {@link HeraldClient.connect}.
 *
 * @example
 * ```ts
 * const herald = createClient({ url: "wss://rt.example.com/ws", getToken: () => fetchToken() });
 * herald.connect();
 * const sub = herald.subscribe<{ "message.created": { id: string } }>("org:acme:ch:general");
 * sub.on("message.created", (data) => refetchMessage(data.id));
 * ```
 */
export function createClient(options: HeraldOptions): HeraldClient {
  return new HeraldClient(options);
}

/** A random idempotency key (122 bits; base 36 where `crypto.randomUUID` is missing). */
function idempotencyKey(): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  let key = "";
  while (key.length < 24) key += Math.random().toString(36).slice(2);
  return key.slice(0, 24);
}

const encoder = new TextEncoder();

/** UTF-8 bytes of a command's JSON line. */
function commandBytes(method: string, params: unknown): number {
  return encoder.encode(JSON.stringify({ id: 0, [method]: params })).length;
}

function notConnected(method: string): HeraldError {
  return new HeraldError("disconnected", `${method}: not connected`, true);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
