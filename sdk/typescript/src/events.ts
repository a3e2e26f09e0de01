import type { SubscribedInfo, UnsubscribedInfo } from "./channel.js";
import type { HeraldError } from "./errors.js";
import type { PresenceStatus } from "./presence.js";
import type { ReconnectAdvice } from "./protocol.js";
import type { Publication } from "./publication.js";
import type { TransportKind } from "./transport/select.js";

/**
 * Where the connection stands:
 * - `connecting`: the first attempt after `connect()`;
 * - `connected`: authenticated, commands flow;
 * - `reconnecting`: lost, waiting for (or making) the next attempt;
 * - `offline`: the browser says there is no network (`offline` event, `navigator.onLine`):
 *   not trying until it is back (`online`); publishes queue meanwhile;
 * - `disconnected`: not connected and not trying (`disconnect()`, or a 4000–4099 close);
 * - `permanently_disconnected`: gave up after the backoff's `maxAttempts`; `connect()` starts over.
 */
export type ConnectionState =
  | "connecting"
  | "connected"
  | "reconnecting"
  | "offline"
  | "disconnected"
  | "permanently_disconnected";

export type { TransportKind };

/** The session the gateway opened. */
export interface ConnectedInfo {
  /** Connection id. */
  clientId: string;
  /** The token's `sub`. */
  userId: string;
  /** The gateway node. */
  node: string;
  /** Which transport carries the connection. */
  transport: TransportKind;
  /** The token's expiry, Unix seconds. */
  expires: number;
}

/** Why a connection ended and what the client does next. */
export interface DisconnectInfo {
  /** The close code (from the close frame, or from the `disconnect` push before it). */
  code: number;
  reason: string;
  /** What the close code's class says: `stop`, `refresh_token`, `backoff` or `now`; `manual` for `disconnect()`. */
  advice: ReconnectAdvice | "manual";
}

/** A publish that waited in the offline queue. */
export interface QueuedPublication {
  channel: string;
  event: string;
  data: unknown;
}

/** A user's status changed in an org (a `status` push on `org:<org>`, received while subscribed to it). */
export interface UserStatusChange {
  org: string;
  userId: string;
  status: PresenceStatus;
  /** Unix milliseconds, when `offline`. */
  lastSeen?: number;
}

/** Events of the client, for {@link HeraldClient.on}. */
export interface ClientEvents {
  /** A ping round trip went over `degradedLatencyMs`. */
  connection_degraded: (info: { latency: number }) => void;
  /** After `connection_degraded`: a round trip is back under `degradedLatencyMs`. */
  connection_recovered: (info: { latency: number }) => void;
  /**
   * The offline queue was full: its oldest publish was dropped (its promise rejects). A
   * dropped rpc only rejects its promise (`queue_overflow`).
   */
  queue_overflow: (dropped: QueuedPublication) => void;
  /** Each ping round trip, ms. */
  latency: (latency: number) => void;
  /** A session opened. */
  connected: (info: ConnectedInfo) => void;
  /** A connection ended. */
  disconnected: (info: DisconnectInfo) => void;
  /**
   * Reconnecting gave up after the backoff's `maxAttempts` (the state turned
   * `permanently_disconnected`); `connect()` starts over.
   */
  permanently_disconnected: (info: { attempts: number }) => void;
  /**
   * A channel's recovery failed after a reconnect (beside its subscription's `state_lost`):
   * publications were missed, refetch the channel's state from your API.
   */
  sync_requested: (info: SubscribedInfo) => void;
  /** The token was replaced on the open connection. */
  token_refreshed: (info: { expires: number }) => void;
  /** A user's status changed in an org. */
  status: (change: UserStatusChange) => void;
  /**
   * The server subscribed this client to a channel (gRPC `Subscribe`, or restored on the
   * first connect of this client). `subscribe(info.channel)` gives a handle on it (sending
   * nothing); listeners added in this callback see the subscription's events and publications
   * from the start. Restores after a reconnect emit only the subscription's own events.
   */
  server_subscribed: (info: { channel: string }) => void;
  /** The server ended a server-side subscription (gRPC `Unsubscribe`: code 2000). */
  server_unsubscribed: (info: UnsubscribedInfo) => void;
  /** Something failed that no promise reports (getToken, refresh, a subscribe). */
  error: (error: HeraldError) => void;
}

/** Options of {@link HeraldClient.history}. */
export interface HistoryOptions {
  /** At most this many publications (default and maximum: the namespace's history size). */
  limit?: number;
  /** Only publications with an offset above this (default 0: from the oldest kept). */
  sinceOffset?: number;
}

/**
 * A channel's history after `sinceOffset`, gathered from as many `history` pages as it
 * took (the gateway bounds each reply by bytes).
 */
export interface History<T = unknown> {
  /** Oldest first. */
  publications: Publication<T>[];
  /** The channel's top offset when the first page was read. */
  offset: number;
  /** The channel's epoch. */
  epoch: string;
  /**
   * Publications up to `offset` remain: paging stopped because the channel's epoch changed
   * between pages (its history was lost). Normally false.
   */
  more: boolean;
}

/**
 * The part of TanStack Query's `QueryClient` that {@link HeraldClient.invalidateOn} uses,
 * typed structurally so that TanStack Query is not a dependency.
 */
export interface QueryClientLike {
  invalidateQueries(filters: { queryKey: unknown[] }): unknown;
}
