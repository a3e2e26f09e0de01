/**
 * Compile-time checks, run by `npm run typecheck` (tsc --noEmit): the public types accept what
 * apps pass them. Nothing here runs.
 */
import WebSocketFromWs from "ws";
import { createClient, type WebSocketConstructor } from "../src/index.js";

// Both the browser's WebSocket and the `ws` package's fit without a cast.
export const fromWs: WebSocketConstructor = WebSocketFromWs;
export const fromDom: WebSocketConstructor = WebSocket;

export function typedEvents(): void {
  const herald = createClient({
    url: "wss://x/ws",
    getToken: () => "t",
    WebSocket: WebSocketFromWs,
  });
  const sub = herald.subscribe<{ "message.created": { id: string } }>("org:acme:ch:general");
  sub.on("message.created", (data, pub) => {
    const id: string = data.id;
    const offset: number = pub.offset;
    void id;
    void offset;
  });
  // @ts-expect-error: `id` is a string
  sub.on("message.created", (data: { id: number }) => void data);
  sub.on("state_lost", (info) => void info.position.epoch);
  // TanStack Query's QueryClient fits structurally.
  const queryClient = {
    invalidateQueries: (filters: { queryKey: unknown[] }) => Promise.resolve(filters),
  };
  const stop = herald.invalidateOn<{ id: string }>(
    queryClient,
    "org:acme:ch:general",
    "message.updated",
    (data) => ["message", data.id],
  );
  stop();
  // rpc resolves with what the backend returned: unknown unless the caller says.
  void herald.rpc("message:send", { text: "hi" }).then((data) => {
    // @ts-expect-error: unknown until typed
    void data.offset;
  });
  void herald.rpc<{ offset: number }>("message:send").then((data) => void (data.offset + 1));
}
