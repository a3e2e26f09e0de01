/**
 * The Herald client protocol v1 (JSON subprotocol `herald.v1.json`) as it travels on the
 * wire: commands, replies, pushes, and the classes of close codes. Pure types and
 * functions, no I/O. Field names are lowerCamelCase, as the gateway sends them.
 *
 * @packageDocumentation
 */

/** The WebSocket subprotocol this SDK speaks by default. */
export const SUBPROTOCOL = "herald.v1.json";

/** The binary subprotocol (`protocol: "protobuf"`), whose codec is in `codec.ts`. */
export const SUBPROTOCOL_PROTO = "herald.v1.proto";

/** A position in a channel's history: the last offset seen and the channel's epoch. */
export interface StreamPosition {
  /** Offset of a publication, contiguous from 1 per channel. */
  offset: number;
  /** The channel's history epoch; it changes when the history is lost. */
  epoch: string;
}

/** A publication as the gateway sends it (`pub` push, history, recovered publications). */
export interface WirePublication {
  event: string;
  data: unknown;
  /** Absent (0) on channels without history. */
  offset?: number;
  /** Absent ("") on channels without history. */
  epoch?: string;
  /** Server time of the publish, Unix milliseconds. */
  ts?: number;
  /** The sender's user id, on client publishes only. */
  from?: string;
}

/** `connect` result. */
export interface ConnectResult {
  /** Connection id. */
  client: string;
  user: string;
  node: string;
  /** Server ping interval, seconds. */
  ping: number;
  /** Token expiry, Unix seconds. */
  expires: number;
}

/** An entry of the subscribe result's `typing`, and the `typing` push. */
export interface WireTyper {
  user: string;
  info?: Record<string, unknown> | null;
  active: boolean;
}

/** `subscribe` result. */
export interface SubscribeResult {
  offset: number;
  epoch: string;
  recoverable: boolean;
  recovered: boolean;
  /** With `recovered`: the first page of the missed publications. */
  publications: WirePublication[];
  /** The page stopped before `offset`: fetch the rest with `history` from its last offset. */
  more?: boolean;
  typing?: WireTyper[];
  /** Subscribed with a subscription token: its expiry, Unix seconds (ends with 2401 then). */
  expires?: number;
}

/** `publish` params. */
export interface PublishParams {
  channel: string;
  event: string;
  data: unknown;
  /** The same key within 5 minutes (per user) publishes once: at most 256 bytes. */
  idempotencyKey?: string;
}

/** `publish` result. */
export interface PublishResult {
  offset: number;
  epoch: string;
}

/** `rpc` result. */
export interface RpcResult {
  /** What the app's backend returned (JSON); null when it returned nothing. */
  data: unknown;
}

/** `history` result. */
export interface HistoryResult {
  publications: WirePublication[];
  offset: number;
  epoch: string;
  /** The page stopped before `offset` (at `limit` or the reply byte budget): ask again. */
  more?: boolean;
}

/** `refresh` result. */
export interface RefreshResult {
  /** The new token's expiry, Unix seconds. */
  expires: number;
}

/** `ping` result. */
export interface PingResult {
  /** Server time, Unix milliseconds. */
  ts: number;
}

/** One connection in a channel's presence, as the gateway sends it. */
export interface WirePresenceMember {
  user: string;
  /** Connection id. */
  client: string;
  info?: Record<string, unknown> | null;
  /** The user's status in the org (`org:<org>…` channels, `presence` result only). */
  status?: string;
  /** Unix milliseconds. */
  joinedAt: number;
  /** The connection's presence state in the channel (`setPresenceState`), when it has one. */
  state?: unknown;
}

/** `state` push: a member's presence state changed (null: cleared). */
export interface WirePresenceState {
  user: string;
  client: string;
  state: unknown;
}

/**
 * `presence` push: a big channel's joins and leaves of the last second, batched (the gateway
 * sends these instead of `join`/`leave` pushes once a channel has more members than its push
 * limit). Apply `leaves`, then `joins`, then `states`; each is absent when empty.
 */
export interface WirePresenceDiff {
  joins?: WirePresenceMember[];
  leaves?: WirePresenceMember[];
  /** State changes, netted per connection: apply after `leaves` and `joins`. */
  states?: WirePresenceState[];
}

/** `presence` result. */
export interface PresenceResult {
  members: WirePresenceMember[];
  /** More members follow: ask again with `cursor`. */
  more?: boolean;
  /** Where the next page starts (opaque), with `more`. */
  cursor?: string;
}

/** `presenceStats` result. */
export interface PresenceStatsResult {
  /** Distinct users in the channel's presence. */
  users: number;
  /** Connections in the channel's presence. */
  clients: number;
}

/** `status` push on `org:<org>`. */
export interface WireStatus {
  user: string;
  /** online | away | busy | offline */
  status: string;
  /** Unix milliseconds, on `offline`. */
  lastSeen?: number;
}

/** The body of an `{"error": …}` reply. */
export interface WireError {
  code: number;
  message: string;
  temporary: boolean;
}

/** Any push (`{"push": …}`): exactly one of the optional fields is set. */
export interface WirePush {
  channel?: string;
  pub?: WirePublication;
  unsubscribe?: { code: number; reason: string };
  disconnect?: { code: number; reason: string; reconnect: boolean };
  join?: WirePresenceMember;
  leave?: WirePresenceMember;
  presence?: WirePresenceDiff;
  typing?: WireTyper;
  state?: WirePresenceState;
  status?: WireStatus;
  /** The server subscribed the connection to `channel` (a server-side subscription). */
  subscribe?: SubscribeResult;
}

/** Any server message. */
export interface ServerMessage {
  id?: number;
  result?: unknown;
  error?: WireError;
  push?: WirePush;
}

/**
 * Protocol error codes (in `error` replies). Codes from 1000 up are the app's backend's own,
 * passed through by `rpc`.
 */
export const ErrorCodes = {
  internal: 100,
  unauthorized: 101,
  unknownChannel: 102,
  permissionDenied: 103,
  methodNotFound: 104,
  alreadySubscribed: 105,
  limitExceeded: 106,
  badRequest: 107,
  notAvailable: 108,
  tokenExpired: 109,
  tooManyRequests: 110,
  unavailable: 111,
  /** `rpc`: the app's backend is unreachable or answered nonsense (temporary). */
  backendUnavailable: 112,
  /** `rpc`: the app's backend did not answer in time (temporary). */
  backendTimeout: 113,
} as const;

/** Server-side `unsubscribe` push codes. */
export const UnsubscribeCodes = {
  /** The server ended the subscription (gRPC `Unsubscribe`…): do not resubscribe. */
  server: 2000,
  /** The subscription token expired: get a new one and resubscribe, recovering. */
  tokenExpired: 2401,
  /** A connection `refresh` no longer allows the channel: do not resubscribe. */
  permissionRevoked: 2403,
  /** Resubscribe now, recovering from the last position seen. */
  resubscribe: 2500,
} as const;

/** Close codes the gateway uses. */
export const CloseCodes = {
  badRequest: 4000,
  unauthorized: 4001,
  tokenExpired: 4002,
  forbiddenOrigin: 4003,
  messageTooLarge: 4009,
  tooManyRequests: 4100,
  connectionLimit: 4101,
  /** Temporarily unavailable (e.g. the state failed while restoring server-side subscriptions). */
  unavailable: 4102,
  shutdown: 4200,
  slowConsumer: 4201,
  noPong: 4202,
} as const;

/**
 * What a client does after a close:
 * - `stop`: do not reconnect as is (4000–4099 except 4002 and 4009);
 * - `refresh_token`: get a new token, then reconnect at once (4002);
 * - `backoff`: reconnect after exponential backoff (4100–4199, abnormal closes, and 4009:
 *   the message too large was dropped, the connection itself is fine);
 * - `now`: reconnect at once with a little jitter (4200–4299).
 */
export type ReconnectAdvice = "stop" | "refresh_token" | "backoff" | "now";

/** The reconnect advice for a close code, by the protocol's three classes. */
export function reconnectAdvice(code: number): ReconnectAdvice {
  if (code === CloseCodes.tokenExpired) return "refresh_token";
  if (code === CloseCodes.messageTooLarge) return "backoff";
  if (code >= 4000 && code <= 4099) return "stop";
  if (code >= 4200 && code <= 4299) return "now";
  return "backoff";
}

/** Encodes one command line: `{"id":N,"<method>":{…}}`. */
export function encodeCommand(id: number, method: string, params: unknown): string {
  return JSON.stringify({ id, [method]: params });
}

/**
 * Decodes a server frame: one JSON message per non-empty line. Lines that are not JSON
 * objects are skipped (and reported through `onInvalid`) without stopping the others.
 */
export function decodeFrame(text: string, onInvalid?: (line: string) => void): ServerMessage[] {
  const messages: ServerMessage[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const message: unknown = JSON.parse(line);
      if (message !== null && typeof message === "object" && !Array.isArray(message)) {
        messages.push(message as ServerMessage);
      } else {
        onInvalid?.(line);
      }
    } catch {
      onInvalid?.(line);
    }
  }
  return messages;
}
