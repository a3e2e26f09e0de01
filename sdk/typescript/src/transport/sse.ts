import { SseParser, type SseEvent } from "./sse-parser.js";
import type { Transport, TransportClose, TransportHandlers } from "./types.js";

/** How long a `404` from `/rpc` waits for the stream's close event before closing with 1006. */
const SESSION_GONE_GRACE_MS = 1000;

/** The `fetch` function the SSE transport uses (the global one by default). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Where the SSE fallback lives. */
export interface SseEndpoints {
  /** `GET`: the `text/event-stream` of server frames. */
  streamUrl: string;
  /** `POST ?session=<id>`: command lines; `POST ?session=<id>&pong`: a ping's answer. */
  rpcUrl: string;
}

/**
 * The SSE endpoints beside a WebSocket URL: same host and port, `http(s)` scheme, the
 * trailing `/ws` path segment replaced by `/sse` and `/rpc`
 * (`wss://rt.example.com/ws` → `https://rt.example.com/sse`, `…/rpc`).
 */
export function sseEndpoints(wsUrl: string): SseEndpoints {
  const url = new URL(wsUrl);
  if (url.protocol === "ws:") url.protocol = "http:";
  else if (url.protocol === "wss:") url.protocol = "https:";
  url.search = "";
  url.hash = "";
  const base = url.pathname.replace(/\/ws\/?$/, "").replace(/\/$/, "");
  url.pathname = `${base}/sse`;
  const streamUrl = url.toString();
  url.pathname = `${base}/rpc`;
  return { streamUrl, rpcUrl: url.toString() };
}

/** How an SSE transport ended, with the HTTP status when a request was refused. */
export interface SseClose extends TransportClose {
  /** The status of a refused `GET /sse` or `POST /rpc` (404 on the stream: no SSE here). */
  httpStatus?: number;
}

/**
 * The SSE fallback transport: a `fetch` of `GET /sse` read with a streaming parser (works
 * in browsers and Node 18+, no `EventSource`), and commands sent with `POST /rpc`, one
 * request at a time, batching whatever queued meanwhile. The first event names the session;
 * each unnamed event carries a server frame; `event: close` carries the close code before
 * the stream ends. `event: ping` is the server's heartbeat: it is answered at once with
 * `POST ?session=<id>&pong` (empty body), beside the command requests, never queued behind
 * them; a client that stops answering is closed 4202.
 */
export function createSseTransport(
  fetchImpl: FetchLike,
  endpoints: SseEndpoints,
  handlers: TransportHandlers,
): Transport {
  const abort = new AbortController();
  let done = false;
  let opened = false;
  let session: string | undefined;
  let closeEvent: { code: number; reason: string } | undefined;
  const outbox: string[] = [];
  let posting = false;

  let goneTimer: ReturnType<typeof setTimeout> | undefined;

  const finish = (close: Omit<SseClose, "opened">) => {
    if (done) return;
    done = true;
    clearTimeout(goneTimer);
    abort.abort();
    handlers.onClose({ ...close, opened });
  };

  const onEvent = (event: SseEvent) => {
    if (done) return;
    if (event.event === "session") {
      if (session !== undefined) return;
      const parsed = parseJson(event.data) as { session?: unknown } | undefined;
      if (typeof parsed?.session !== "string" || parsed.session === "") {
        finish({ code: 1006, reason: "SSE stream sent no session id" });
        return;
      }
      session = parsed.session;
      opened = true;
      handlers.onOpen();
      pump();
    } else if (event.event === "close") {
      const parsed = parseJson(event.data) as { code?: unknown; reason?: unknown } | undefined;
      closeEvent = {
        code: typeof parsed?.code === "number" ? parsed.code : 1006,
        reason: typeof parsed?.reason === "string" ? parsed.reason : "",
      };
    } else if (event.event === "message" && opened) {
      handlers.onFrame(event.data);
    } else if (event.event === "ping" && opened) {
      pong();
    }
  };

  /** `/rpc` says the session ended: wait a moment for the stream's close event (and so how
   * to reconnect) before settling for 1006. */
  const sessionGone = () => {
    goneTimer ??= setTimeout(
      () => finish({ code: 1006, reason: "SSE session is gone", httpStatus: 404 }),
      SESSION_GONE_GRACE_MS,
    );
  };

  const pong = () => {
    if (done || session === undefined) return;
    const url = `${endpoints.rpcUrl}?session=${encodeURIComponent(session)}&pong`;
    fetchImpl(url, { method: "POST", cache: "no-store", signal: abort.signal }).then(
      (response) => {
        void response.body?.cancel().catch(() => {});
        if (response.status === 404) sessionGone();
      },
      // A lost pong is the server's to notice (4202, on the stream); a dead network ends
      // the stream too.
      () => {},
    );
  };

  const read = async () => {
    let response: Response;
    try {
      response = await fetchImpl(endpoints.streamUrl, {
        method: "GET",
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
    } catch (error) {
      finish({ code: 1006, reason: describe(error, "SSE request failed") });
      return;
    }
    if (!response.ok || !response.body) {
      void response.body?.cancel().catch(() => {});
      finish({
        code: 1006,
        reason: `GET ${endpoints.streamUrl} answered ${response.status}`,
        httpStatus: response.status,
      });
      return;
    }
    const parser = new SseParser(onEvent);
    const decoder = new TextDecoder();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (done) break;
        if (ended) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
      parser.end();
    } catch (error) {
      finish({ code: 1006, reason: describe(error, "SSE stream failed") });
      return;
    } finally {
      if (done) void reader.cancel().catch(() => {});
    }
    finish(closeEvent ?? { code: 1006, reason: "SSE stream ended" });
  };

  const pump = () => {
    if (posting || done || session === undefined || outbox.length === 0) return;
    posting = true;
    const body = outbox.splice(0).join("\n");
    const url = `${endpoints.rpcUrl}?session=${encodeURIComponent(session)}`;
    fetchImpl(url, {
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8" },
      body,
      cache: "no-store",
      signal: abort.signal,
    }).then(
      (response) => {
        void response.body?.cancel().catch(() => {});
        posting = false;
        if (response.status === 404) {
          sessionGone();
        } else if (response.status === 413) {
          // What a WebSocket closes with 4009: the message is too large; do not resend it.
          finish({ code: 4009, reason: "message too large", httpStatus: 413 });
        } else if (!response.ok) {
          finish({
            code: 1006,
            reason: `POST ${endpoints.rpcUrl} answered ${response.status}`,
            httpStatus: response.status,
          });
        } else {
          pump();
        }
      },
      (error: unknown) => {
        posting = false;
        finish({ code: 1006, reason: describe(error, "SSE command request failed") });
      },
    );
  };

  void read();

  return {
    kind: "sse",
    send(text: string) {
      if (done) return;
      outbox.push(text);
      pump();
    },
    close() {
      if (done) return;
      done = true;
      clearTimeout(goneTimer);
      abort.abort();
    },
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describe(error: unknown, fallback: string): string {
  return error instanceof Error && error.message ? `${fallback}: ${error.message}` : fallback;
}
