/**
 * The Herald client protocol v1 (JSON subprotocol `herald.v1.json`) as it travels on the
 * wire: commands, replies, pushes, and the classes of close codes. Pure types and
 * functions, no I/O. Field names are lowerCamelCase, as the gateway sends them.
 *
 * @packageDocumentation
 */

import type * as Wire from "./gen/protocol/wire.js";

/** The WebSocket subprotocol this SDK speaks by default. */
export const SUBPROTOCOL = "herald.v1.json";

/** The binary subprotocol (`protocol: "protobuf"`), whose codec is in `codec.ts`. */
export const SUBPROTOCOL_PROTO = "herald.v1.proto";

/*
 * The wire shapes are generated from the gateway's Rust protocol crate into
 * `gen/protocol/wire.ts` (`npm run generate:protocol`); these are the SDK's names for them.
 */

/** A position in a channel's history: the last offset seen and the channel's epoch. */
export type StreamPosition = Wire.StreamPosition;

/** A publication as the gateway sends it (`pub` push, history, recovered publications). */
export type WirePublication = Wire.Publication;

/** `connect` result. */
export type ConnectResult = Wire.ConnectResult;

/** An entry of the subscribe result's `typing`, and the `typing` push. */
export type WireTyper = Wire.TypingPush;

/** `subscribe` result. */
export type SubscribeResult = Wire.SubscribeResult<WirePublication>;

/** `publish` params. */
export type PublishParams = Wire.PublishRequest;

/** `publish` result. */
export type PublishResult = Wire.PublishResult;

/** `rpc` result. */
export type RpcResult = Wire.RpcResult;

/** `history` result. */
export type HistoryResult = Wire.HistoryResult<WirePublication>;

/** `refresh` result. */
export type RefreshResult = Wire.RefreshResult;

/** `ping` result. */
export type PingResult = Wire.PingResult;

/** One connection in a channel's presence, as the gateway sends it. */
export type WirePresenceMember = Wire.PresenceMember;

/** `state` push: a member's presence state changed (null: cleared). */
export type WirePresenceState = Wire.StatePush;

/** `presence` push: a big channel's joins, leaves and state changes, batched. */
export type WirePresenceDiff = Wire.PresenceDiff;

/** `presence` result. */
export type PresenceResult = Wire.PresenceResult;

/** `presenceStats` result. */
export type PresenceStatsResult = Wire.PresenceStatsResult;

/** `status` push on `org:<org>`. */
export type WireStatus = Wire.UserStatus;

/** The body of an `{"error": …}` reply. */
export type WireError = Wire.ErrorBody;

/** Any push (`{"push": …}`): exactly one of the optional fields besides `channel` is set. */
export type WirePush = Wire.Push;

/** Any server message. */
export type ServerMessage = Wire.ServerMessage;

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

/** Whether a JSON value (a token's `info` claim, say) is an object whose fields can be read. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object";
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
