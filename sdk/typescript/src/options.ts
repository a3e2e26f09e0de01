import { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import type { FetchLike } from "./transport/sse.js";
import type { WebSocketConstructor } from "./transport/websocket.js";

/** Which transport to use. */
export type TransportMode = "auto" | "websocket" | "sse";

/** Which encoding the WebSocket speaks: JSON text frames, or protobuf binary frames. */
export type ProtocolMode = "json" | "protobuf";

/** Options of {@link createClient}. Only `url` and `getToken` are required. */
export interface HeraldOptions {
  /** The WebSocket URL, e.g. `wss://rt.example.com/ws`. The SSE fallback uses the same host. */
  url: string;
  /**
   * Returns a connection token (a JWT from your backend). Called before the first connect,
   * before each token refresh, and after the gateway said the token expired. The token is
   * sent in the `connect` command, never in a URL, and never logged.
   */
  getToken: () => string | Promise<string>;
  /** The WebSocket constructor. Default `globalThis.WebSocket`; in Node 20 pass `WebSocket` from `ws`. */
  WebSocket?: WebSocketConstructor;
  /** The `fetch` used by the SSE fallback. Default `globalThis.fetch`. */
  fetch?: FetchLike;
  /**
   * `websocket`, `sse`, or `auto` (default): WebSocket, falling back to SSE after two
   * WebSocket handshakes in a row fail (and back to WebSocket when SSE fails to open).
   */
  transport?: TransportMode;
  /**
   * `json` (default, subprotocol `herald.v1.json`) or `protobuf` (`herald.v1.proto`: binary
   * frames, smaller and cheaper to decode). The SSE fallback always speaks JSON.
   */
  protocol?: ProtocolMode;
  /** The SSE stream URL. Default: `url` with an http(s) scheme and `/sse` for `/ws`. */
  sseUrl?: string;
  /** The SSE command URL. Default: `url` with an http(s) scheme and `/rpc` for `/ws`. */
  rpcUrl?: string;
  /** Reconnect backoff; unset fields keep their defaults (1 s doubling to 30 s, 0–1 s jitter, 20 attempts). */
  backoff?: Partial<BackoffOptions>;
  /** Interval of `ping` commands while connected, ms. Default 25000. */
  pingIntervalMs?: number;
  /** A ping without reply for this long closes the connection and reconnects, ms. Default 20000. */
  pingTimeoutMs?: number;
  /** Round trips above this emit `connection_degraded`, ms. Default 2000. */
  degradedLatencyMs?: number;
  /** Publishes kept while offline; the oldest is dropped (`queue_overflow`) past this. Default 100. */
  offlineQueueSize?: number;
  /** `typing.start()` sends at most once per this many ms. Default 1000. */
  typingThrottleMs?: number;
  /** `typing.stop()` runs by itself this long after the last `start()`, ms. Default 5000. */
  typingIdleMs?: number;
  /** Another user's typing indicator disappears after this long without a push, ms. Default 6000. */
  typingExpiryMs?: number;
  /**
   * The token is refreshed (with `refresh`, on the open connection) this long before it
   * expires, ms; or halfway through its remaining life when that is shorter. Default 60000.
   */
  refreshBeforeExpiryMs?: number;
  /** Every command fails with a `timeout` error after this long without a reply, ms. Default 10000. */
  commandTimeoutMs?: number;
  /** Client name sent in `connect`. Default `herald-js`. */
  name?: string;
  /** Client version sent in `connect`. */
  version?: string;
  /** Random numbers in [0, 1) for jitter (tests pass a fixed one). Default `Math.random`. */
  random?: () => number;
  /**
   * Connect as soon as the client is created. Default false: the client connects on
   * `connect()` or on the first `subscribe` (unless `disconnect()` ran before).
   */
  autoConnect?: boolean;
  /**
   * Allow `ws://` and `http://` URLs to hosts other than localhost (tokens and data would go
   * in clear text). Default false: such URLs throw at creation.
   */
  allowInsecureTransport?: boolean;
  /**
   * The gateway's `HERALD_MAX_MESSAGE_BYTES`: a command bigger than this (UTF-8 bytes of its
   * JSON) fails at once with `message_too_large` instead of being sent (the gateway would
   * close the connection with 4009). Default 65536.
   */
  maxMessageBytes?: number;
  /** Publishes sent per channel per second at most; later ones wait, in order. Default 10. */
  publishesPerSecond?: number;
  /**
   * Keep unsent publishes (the offline queue) in `localStorage`, so that they survive a
   * reload: `true`, or the storage and key to use. Default off. Restored publishes go out
   * with their idempotency keys after the next connect; their failures are `error` events.
   */
  persistOfflineQueue?: boolean | { key?: string; storage?: StorageLike };
}

/** The part of the Web Storage API the offline queue's persistence uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** {@link HeraldOptions} with every default filled in. */
export interface ResolvedOptions {
  url: string;
  getToken: () => string | Promise<string>;
  WebSocket: WebSocketConstructor | undefined;
  fetch: FetchLike | undefined;
  transport: TransportMode;
  protocol: ProtocolMode;
  sseUrl: string | undefined;
  rpcUrl: string | undefined;
  backoff: BackoffOptions;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  degradedLatencyMs: number;
  offlineQueueSize: number;
  typingThrottleMs: number;
  typingIdleMs: number;
  typingExpiryMs: number;
  refreshBeforeExpiryMs: number;
  commandTimeoutMs: number;
  name: string;
  version: string;
  random: () => number;
  autoConnect: boolean;
  maxMessageBytes: number;
  publishesPerSecond: number;
  /** Where the offline queue is persisted, or null. */
  persistence: { key: string; storage: StorageLike } | null;
}

/** The SDK's version, sent in `connect`. */
export const SDK_VERSION = "0.1.0";

/** Fills in the defaults. */
export function resolveOptions(options: HeraldOptions): ResolvedOptions {
  if (!options || typeof options.url !== "string" || options.url === "") {
    throw new TypeError("herald: `url` is required");
  }
  if (typeof options.getToken !== "function") {
    throw new TypeError("herald: `getToken` is required");
  }
  const globals = globalThis as {
    WebSocket?: WebSocketConstructor;
    fetch?: FetchLike;
  };
  const resolved: ResolvedOptions = {
    url: options.url,
    getToken: options.getToken,
    WebSocket: options.WebSocket ?? globals.WebSocket,
    fetch: options.fetch ?? (globals.fetch ? globals.fetch.bind(globalThis) : undefined),
    transport: options.transport ?? "auto",
    protocol: options.protocol ?? "json",
    sseUrl: options.sseUrl,
    rpcUrl: options.rpcUrl,
    backoff: { ...DEFAULT_BACKOFF, ...definedOnly(options.backoff ?? {}) },
    pingIntervalMs: options.pingIntervalMs ?? 25000,
    pingTimeoutMs: options.pingTimeoutMs ?? 20000,
    degradedLatencyMs: options.degradedLatencyMs ?? 2000,
    offlineQueueSize: options.offlineQueueSize ?? 100,
    typingThrottleMs: options.typingThrottleMs ?? 1000,
    typingIdleMs: options.typingIdleMs ?? 5000,
    typingExpiryMs: options.typingExpiryMs ?? 6000,
    refreshBeforeExpiryMs: options.refreshBeforeExpiryMs ?? 60000,
    commandTimeoutMs: options.commandTimeoutMs ?? 10000,
    name: options.name ?? "herald-js",
    version: options.version ?? SDK_VERSION,
    random: options.random ?? Math.random,
    autoConnect: options.autoConnect ?? false,
    maxMessageBytes: options.maxMessageBytes ?? 65536,
    publishesPerSecond: options.publishesPerSecond ?? 10,
    persistence: persistence(options),
  };
  if (!options.allowInsecureTransport) {
    for (const url of [resolved.url, resolved.sseUrl, resolved.rpcUrl]) {
      if (url !== undefined) refuseInsecure(url);
    }
  }
  if (resolved.transport === "websocket" && !resolved.WebSocket) {
    throw new TypeError(
      "herald: no WebSocket implementation: pass `WebSocket` (in Node 20: from the `ws` package)",
    );
  }
  if (resolved.transport === "sse" && !resolved.fetch) {
    throw new TypeError("herald: no fetch implementation for the SSE transport: pass `fetch`");
  }
  if (resolved.transport === "auto" && !resolved.WebSocket && !resolved.fetch) {
    throw new TypeError("herald: neither WebSocket nor fetch is available: pass `WebSocket`");
  }
  return resolved;
}

/**
 * Throws on a `ws://` or `http://` URL to a host other than localhost: tokens in clear text
 * are a deployment mistake, not a choice to make silently.
 */
function refuseInsecure(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`herald: invalid URL ${url}`);
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "http:") return;
  if (isLocalHost(parsed.hostname)) return;
  throw new TypeError(
    `herald: ${parsed.protocol}// to ${parsed.hostname} sends tokens in clear text: use wss:// (https://), or pass allowInsecureTransport: true`,
  );
}

function isLocalHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return (
    host === "localhost" ||
    host.endsWith(".localhost") ||
    /^127(\.\d{1,3}){3}$/.test(host) ||
    host === "[::1]"
  );
}

const DEFAULT_QUEUE_KEY = "herald:offline-queue";

function persistence(options: HeraldOptions): ResolvedOptions["persistence"] {
  const setting = options.persistOfflineQueue;
  if (!setting) return null;
  const custom = setting === true ? {} : setting;
  const storage =
    custom.storage ?? (globalThis as { localStorage?: StorageLike }).localStorage ?? undefined;
  if (!storage) {
    throw new TypeError("herald: persistOfflineQueue needs localStorage: pass `storage`");
  }
  return { key: custom.key ?? DEFAULT_QUEUE_KEY, storage };
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
