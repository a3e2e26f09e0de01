import type { WireError } from "./protocol.js";

/**
 * Codes of errors the client raises itself, not the gateway:
 * - `timeout`: no reply within the command timeout;
 * - `disconnected`: the connection ended before the reply, or the client is not connected;
 * - `queue_overflow`: a publish or rpc queued while offline was dropped to make room;
 * - `client_closed`: `disconnect()` was called while the command was pending or queued;
 * - `transport`: the transport failed (a bad handshake, a lost SSE session);
 * - `message_too_large`: the command is over `maxMessageBytes` (or a presence state over
 *   1024 bytes); it was not sent (the gateway would close the connection with 4009).
 */
export type LocalErrorCode =
  | "timeout"
  | "disconnected"
  | "queue_overflow"
  | "client_closed"
  | "transport"
  | "message_too_large";

/**
 * An error from Herald: either a protocol error reply (numeric `code`, see
 * {@link ErrorCodes}) or one the client raised (string `code`, see {@link LocalErrorCode}).
 * `temporary` says whether the same command may succeed when tried again later.
 */
export class HeraldError extends Error {
  /**
   * The protocol's error code (100–113), the app's backend's own code (1000 and up, from
   * `rpc`), or a {@link LocalErrorCode}.
   */
  readonly code: number | LocalErrorCode;
  /** Whether the same command may succeed later. */
  readonly temporary: boolean;

  /** Creates an error with a code, a message and whether it is temporary. */
  constructor(code: number | LocalErrorCode, message: string, temporary: boolean) {
    super(message);
    this.name = "HeraldError";
    this.code = code;
    this.temporary = temporary;
  }

  /** The error an `{"error": …}` reply carries. */
  static fromWire(error: WireError, method: string): HeraldError {
    return new HeraldError(error.code, `${method}: ${error.message}`, error.temporary);
  }
}
