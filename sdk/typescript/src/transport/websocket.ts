import { SUBPROTOCOL, SUBPROTOCOL_PROTO } from "../protocol.js";
import type { Transport, TransportHandlers } from "./types.js";

/**
 * The part of the WebSocket API the client uses: the browser's `WebSocket` and the `ws`
 * package's both fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  // Event parameter types differ between implementations; only the fields read below matter.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /** Set to `arraybuffer` for the binary subprotocol. */
  binaryType?: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `WebSocket` from the `ws` package. */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

const OPEN = 1;

/**
 * Opens a WebSocket to `url` with the `herald.v1.json` subprotocol, or `herald.v1.proto`
 * given the binary codec's command encoder: then commands go out as binary frames and binary
 * frames come in. The token never goes in the URL: the client sends it in the `connect`
 * command.
 */
export function createWebSocketTransport(
  WebSocketImpl: WebSocketConstructor,
  url: string,
  handlers: TransportHandlers,
  encodeBinary?: (commands: string) => Uint8Array,
): Transport {
  const binary = encodeBinary !== undefined;
  let opened = false;
  let done = false;
  let socket: WebSocketLike;
  try {
    socket = new WebSocketImpl(url, binary ? SUBPROTOCOL_PROTO : SUBPROTOCOL);
    if (binary) socket.binaryType = "arraybuffer";
  } catch (error) {
    // A malformed URL throws synchronously; report it like a failed handshake.
    done = true;
    const reason = error instanceof Error ? error.message : "cannot open WebSocket";
    queueMicrotask(() => handlers.onClose({ code: 1006, reason, opened: false }));
    return { kind: "websocket", send() {}, close() {} };
  }

  const detach = () => {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    // Keep an error handler: some implementations throw on an unhandled "error" event.
    socket.onerror = () => {};
  };

  socket.onopen = () => {
    if (done) return;
    opened = true;
    handlers.onOpen();
  };
  socket.onmessage = (event: { data: unknown }) => {
    if (done) return;
    // Each subprotocol carries one kind of data frame; anything else is ignored.
    if (!binary && typeof event.data === "string") handlers.onFrame(event.data);
    if (binary && event.data instanceof ArrayBuffer) handlers.onFrame(new Uint8Array(event.data));
  };
  socket.onerror = () => {
    // A close event always follows; it carries what there is to know.
  };
  socket.onclose = (event: { code?: number; reason?: string }) => {
    if (done) return;
    done = true;
    detach();
    handlers.onClose({ code: event.code || 1006, reason: event.reason ?? "", opened });
  };

  return {
    kind: "websocket",
    send(text: string) {
      if (!done && socket.readyState === OPEN) {
        socket.send(encodeBinary ? encodeBinary(text) : text);
      }
    },
    close(code = 1000, reason = "") {
      if (done) return;
      done = true;
      detach();
      try {
        socket.close(code, reason);
      } catch {
        // Closing a socket that is still connecting throws in some implementations.
      }
    },
  };
}
