import type { TransportMode } from "../options.js";
import type { SseClose } from "./sse.js";

/** The transports. */
export type TransportKind = "websocket" | "sse";

/**
 * Chooses each attempt's transport. `websocket` and `sse` are fixed. `auto` uses WebSocket,
 * moves to SSE after two WebSocket handshakes in a row fail (a proxy that blocks upgrades),
 * and back to WebSocket when SSE fails to open (the gateway is simply down, say); a gateway
 * whose `/sse` answers 404 has no fallback and is not asked again. Without a WebSocket
 * implementation it is SSE, without `fetch` WebSocket.
 */
export class TransportSelector {
  private wsFailures = 0;
  private preferSse = false;
  private sseUnavailable = false;

  /** Creates a selector for `mode` and the implementations available. */
  constructor(
    private readonly mode: TransportMode,
    private readonly hasWebSocket: boolean,
    private readonly hasFetch: boolean,
  ) {}

  /** The transport of the next attempt. */
  pick(): TransportKind {
    if (this.mode === "websocket") return "websocket";
    if (this.mode === "sse") return "sse";
    if (!this.hasWebSocket) return "sse";
    if (!this.hasFetch || this.sseUnavailable) return "websocket";
    return this.preferSse ? "sse" : "websocket";
  }

  /** How an attempt over `kind` ended. */
  closed(kind: TransportKind, close: SseClose): void {
    if (this.mode !== "auto") return;
    if (kind === "websocket") {
      if (close.opened) {
        this.wsFailures = 0;
      } else if (++this.wsFailures >= 2) {
        this.wsFailures = 0;
        this.preferSse = true;
      }
    } else if (!close.opened) {
      this.preferSse = false;
      if (close.httpStatus === 404) this.sseUnavailable = true;
    }
  }

  /** A session opened: the handshake streak is over. */
  connected(): void {
    this.wsFailures = 0;
  }

  /** `connect()` starts over with WebSocket. */
  reset(): void {
    this.wsFailures = 0;
    this.preferSse = false;
  }
}
