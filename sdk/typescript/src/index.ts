/**
 * `herald-client`: the browser and Node client of the Herald real-time gateway.
 *
 * ```ts
 * import { createClient } from "herald-client";
 * const herald = createClient({ url: "wss://rt.example.com/ws", getToken: () => fetchToken() });
 * herald.connect();
 * herald.subscribe("org:acme:ch:general").on("message.created", (data, pub) => { … });
 * ```
 *
 * React hooks are in `herald-client/react`.
 *
 * @packageDocumentation
 */

export {
  createClient,
  HeraldClient,
  type ChannelHandlers,
  type PresenceStats,
  type PublishOptions,
  type RpcOptions,
} from "./client.js";
export type {
  ClientEvents,
  ConnectedInfo,
  ConnectionState,
  DisconnectInfo,
  History,
  HistoryOptions,
  QueryClientLike,
  QueuedPublication,
  TransportKind,
  UserStatusChange,
} from "./events.js";
export { HeraldError, type LocalErrorCode } from "./errors.js";
export type { Unsubscribe } from "./emitter.js";
export type { HeraldOptions, ProtocolMode, StorageLike, TransportMode } from "./options.js";
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export {
  Subscription,
  type SubscriptionPresence,
  type SubscriptionTyping,
} from "./subscription.js";
export type {
  SubscribedInfo,
  SubscribeOptions,
  SubscriptionEvents,
  SubscriptionState,
  SubscriptionTokenSource,
  UnsubscribedInfo,
} from "./channel.js";
export type { EventMap, Publication } from "./publication.js";
export type { PresenceMember, PresenceStatus, SettableStatus } from "./presence.js";
export type { Typer } from "./typing.js";
export {
  CloseCodes,
  ErrorCodes,
  reconnectAdvice,
  UnsubscribeCodes,
  type PublishResult,
  type ReconnectAdvice,
  type RpcResult,
  type StreamPosition,
} from "./protocol.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport/websocket.js";
export type { FetchLike } from "./transport/sse.js";
