/** How a transport ended. */
export interface TransportClose {
  /** The close code (1006 when the connection was lost without one). */
  code: number;
  reason: string;
  /** Whether the transport had opened: false means the handshake itself failed. */
  opened: boolean;
}

/** What a transport tells the client. Each callback may be called from any task. */
export interface TransportHandlers {
  /** The transport is open: commands may be sent (the first one must be `connect`). */
  onOpen(): void;
  /**
   * A server frame: one or more newline-separated JSON messages (text), or length-delimited
   * protobuf messages (binary, `herald.v1.proto`).
   */
  onFrame(frame: string | Uint8Array): void;
  /** The transport ended by itself. Not called after {@link Transport.close}. */
  onClose(close: TransportClose): void;
}

/**
 * One connection attempt over one transport. It starts opening when created, calls
 * `onOpen` once open, `onFrame` for each server frame and `onClose` once when it ends by
 * itself. After `close()` it calls nothing more.
 */
export interface Transport {
  /** Which kind this is. */
  readonly kind: "websocket" | "sse";
  /** Sends one command line (or several, newline-separated). */
  send(text: string): void;
  /** Closes the transport; no callback follows. */
  close(code?: number, reason?: string): void;
}

/** Creates a transport that reports to `handlers`. */
export type TransportFactory = (handlers: TransportHandlers) => Transport;
