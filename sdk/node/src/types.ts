/**
 * The messages of `proto/herald/v1/api.proto` and `backend.proto` as this SDK exposes them:
 * field names in lowerCamelCase (proto3's JSON mapping), 64-bit integers as numbers (offsets,
 * counts and Unix milliseconds stay far below 2^53), and JSON `bytes` fields (`data`, `info`)
 * parsed, `null` when empty.
 */

/** `PublishResponse`: where the publication landed. */
export interface PublishResponse {
  /** Offset in the channel's history; 0 on channels without history. */
  offset: number;
  /** The channel's history epoch; empty on channels without history. */
  epoch: string;
}

/** `BroadcastResponse`. */
export interface BroadcastResponse {
  /** In the order of the request's `channels`. */
  results: PublishResponse[];
}

/** `Publication`, one entry of a channel's history. */
export interface Publication<T = unknown> {
  offset: number;
  event: string;
  data: T;
  /** Server time of the publish, Unix milliseconds. */
  ts: number;
  /** The sender's user id for client publishes; empty for server publishes. */
  from: string;
}

/** `HistoryResponse`: one page of a channel's history. */
export interface HistoryResponse<T = unknown> {
  /** Oldest first. */
  publications: Publication<T>[];
  /** The channel's current top offset. */
  offset: number;
  epoch: string;
  /** The page stopped before `offset`: ask again from the last offset received. */
  more: boolean;
}

/** `DisconnectResponse`. */
export interface DisconnectResponse {
  /** How many connections were closed. */
  connections: number;
}

/** `NodeInfo`. */
export interface NodeInfo {
  id: string;
  version: string;
  connections: number;
  subscriptions: number;
  uptimeSeconds: number;
}

/** `InfoResponse`. */
export interface InfoResponse {
  nodes: NodeInfo[];
}

/** `PresenceMember`: one connection in a channel's presence. */
export interface PresenceMember<I = unknown> {
  user: string;
  /** Connection id. */
  client: string;
  /** The token's `info` claim; `null` when none. */
  info: I | null;
  /** Unix milliseconds. */
  joinedAt: number;
  /** `online` | `away` | `busy` on `org:<org>…` channels; empty elsewhere. */
  status: string;
  /** The connection's presence state (the client's `setPresenceState`); `null` when none. */
  state: unknown;
}

/** `PresenceResponse`. */
export interface PresenceResponse<I = unknown> {
  members: PresenceMember<I>[];
}

/** `PresenceStatsResponse`. */
export interface PresenceStatsResponse {
  users: number;
  clients: number;
}

/** `UserStatus`. */
export interface UserStatus {
  user: string;
  /** `online` | `away` | `busy` | `offline`. */
  status: string;
  /** Unix milliseconds of the last connection's end, when offline (0: never seen). */
  lastSeen: number;
}

/** `UserStatusResponse`. */
export interface UserStatusResponse {
  /** In the order of the request's `users`. */
  statuses: UserStatus[];
}

/** `RpcRequest`: one client `rpc`, as Herald calls the app's backend with it. */
export interface RpcRequest<D = unknown, I = unknown> {
  /** The connection's user: its token's `sub`, verified by Herald. */
  user: string;
  /** The connection's id (as in its `connect` result and in presence). */
  client: string;
  /** The token's `orgs` claim. */
  orgs: string[];
  /** The token's `info` claim; `null` when the token has none. */
  info: I | null;
  /** The client's method, e.g. `message:send`. */
  method: string;
  /** The client's `data`; `null` when it sent none. */
  data: D;
  /** The id of the node the client is connected to. */
  node: string;
}
