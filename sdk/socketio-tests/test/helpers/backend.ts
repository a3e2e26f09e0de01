/**
 * The app's backend, the same for both targets: the reference server calls it in process,
 * Herald reaches it over gRPC (`herald.v1.Backend/Rpc`). It records every call so a test can
 * wait for an event sent without an ack.
 */
import { EventEmitter } from "node:events";

/** One client event that reached the backend. */
export interface BackendCall {
  user: string;
  method: string;
  data: unknown;
}

/** What the backend answers: data for the client's ack, or the app's own error. */
export interface BackendReply {
  data?: unknown;
  error?: { code: number; message: string };
}

export interface Backend {
  readonly calls: BackendCall[];
  rpc(call: BackendCall): BackendReply;
  /** Calls `listener` with each call from now on; returns its remover. */
  onCall(listener: (call: BackendCall) => void): () => void;
}

/** `echo` answers who called with what; `fail` refuses with code 1422; anything else is accepted with null. */
export function createBackend(): Backend {
  const calls: BackendCall[] = [];
  const events = new EventEmitter();
  return {
    calls,
    rpc(call) {
      calls.push(call);
      events.emit("call", call);
      switch (call.method) {
        case "echo":
          return { data: { user: call.user, data: call.data } };
        case "fail":
          return { error: { code: 1422, message: "text is empty" } };
        default:
          return { data: null };
      }
    },
    onCall(listener) {
      events.on("call", listener);
      return () => events.off("call", listener);
    },
  };
}
