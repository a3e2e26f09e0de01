/**
 * Who the demo user is and how the demo gets its client: a name kept in localStorage, a token
 * from the gateway's development endpoint `/dev/token?user=…` (served by `herald serve --dev`),
 * and a client of the same origin's `/ws`.
 */
import { createClient, type HeraldClient } from "../src/index.js";
import { USER_NAME } from "./feed.js";

const STORAGE_KEY = "herald-demo-user";

/** The name this browser used last, if any. */
export function storedUser(): string | null {
  try {
    const user = localStorage.getItem(STORAGE_KEY);
    return user && USER_NAME.test(user) ? user : null;
  } catch {
    return null; // storage disabled
  }
}

export function storeUser(user: string | null): void {
  try {
    if (user === null) localStorage.removeItem(STORAGE_KEY);
    else localStorage.setItem(STORAGE_KEY, user);
  } catch {
    // storage disabled: the name lasts for this page only
  }
}

/** A demo token for `user`; rejects with the gateway's message when it refuses. */
export async function fetchToken(user: string): Promise<string> {
  const response = await fetch(`/dev/token?user=${encodeURIComponent(user)}`, {
    cache: "no-store",
  });
  if (!response.ok) {
    const message = (await response.text()).trim();
    throw new Error(message || `the gateway answered ${response.status}`);
  }
  const body = (await response.json()) as { token?: unknown };
  if (typeof body.token !== "string") throw new Error("the gateway sent no token");
  return body.token;
}

/** The WebSocket URL of the gateway that served this page. */
export function gatewayUrl(location: { protocol: string; host: string }): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

/**
 * A client for `user` (not connected). `firstToken`, fetched while signing in, is used for the
 * first connect; later connects and refreshes fetch a new one.
 */
export function demoClient(user: string, firstToken: string | null = null): HeraldClient {
  let token = firstToken;
  return createClient({
    url: gatewayUrl(window.location),
    getToken: () => {
      const first = token;
      token = null;
      return first ?? fetchToken(user);
    },
    name: "herald-demo",
    // The URL follows the page's own scheme: ws:// only for a page served over http://.
    allowInsecureTransport: true,
  });
}
