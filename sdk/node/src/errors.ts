import { status as grpcStatus, type ServiceError } from "@grpc/grpc-js";

/** A failed call of Herald's gRPC API: its gRPC status code, the method and Herald's message. */
export class HeraldError extends Error {
  override readonly name = "HeraldError";
  /** The gRPC status code (`grpc.status`, e.g. 3 INVALID_ARGUMENT). */
  readonly code: grpcStatus;
  /** The code's name, e.g. `INVALID_ARGUMENT`. */
  readonly codeName: string;
  /** The RPC, e.g. `Publish`. */
  readonly method: string;
  /** Herald's own message ("channel … is not in a configured namespace"). */
  readonly details: string;

  constructor(method: string, code: grpcStatus, details: string, options?: { cause?: unknown }) {
    const codeName = grpcStatus[code] ?? String(code);
    super(`Herald ${method} failed: ${codeName}: ${details}`, options);
    this.code = code;
    this.codeName = codeName;
    this.method = method;
    this.details = details;
  }

  /** The error of a failed call. */
  static from(method: string, error: ServiceError): HeraldError {
    return new HeraldError(method, error.code, error.details || error.message, { cause: error });
  }
}

/**
 * Thrown by a backend's `rpc` handler to refuse a request: the client gets this code (at
 * least 1000, so it never passes for one of Herald's) and message as they are.
 */
export class BackendError extends Error {
  override readonly name = "BackendError";
  readonly code: number;

  constructor(code: number, message: string) {
    if (!Number.isInteger(code) || code < 1000 || code > 0xffff_ffff) {
      throw new RangeError(`a backend error code is an integer of at least 1000, got ${code}`);
    }
    super(message);
    this.code = code;
  }
}
