/** Clients of a test gateway: `ws` as the WebSocket, tokens minted per connect. */
import WebSocket from "ws";
import {
  createClient,
  type ConnectionState,
  type HeraldClient,
  type HeraldOptions,
  type Subscription,
  type SubscribedInfo,
} from "../../src/index.js";
import type { Gateway } from "./gateway.js";
import { mintToken, type TokenClaims } from "./token.js";
import { waitFor } from "./wait.js";

export interface TestClient {
  client: HeraldClient;
  /** How many times getToken was called. */
  tokens(): number;
}

/** A client of `gateway` for user `sub` (not connected yet). */
export function makeClient(
  gateway: Gateway,
  sub: string,
  options: Partial<HeraldOptions> & { claims?: Partial<TokenClaims> } = {},
): TestClient {
  let tokens = 0;
  const { claims, ...rest } = options;
  const client = createClient({
    url: gateway.wsUrl,
    WebSocket,
    getToken: () => {
      tokens += 1;
      return mintToken(gateway.secret, { sub, ...claims });
    },
    ...rest,
  });
  return { client, tokens: () => tokens };
}

/** Waits until `client` is in `state` (now or later). */
export function reach(
  client: HeraldClient,
  state: ConnectionState,
  timeoutMs = 10_000,
): Promise<unknown> {
  if (client.getConnectionState() === state) return Promise.resolve();
  return waitFor(
    `connection state ${state}`,
    (cb) => client.onConnectionChange(cb),
    (s) => s === state,
    timeoutMs,
  );
}

/** Waits until `subscription` is active (now or later). */
export function active(subscription: Subscription<any>, timeoutMs = 10_000): Promise<unknown> {
  if (subscription.state === "subscribed") return Promise.resolve();
  return waitFor<SubscribedInfo>(
    `subscription to ${subscription.channel}`,
    (cb) => subscription.on("subscribed", cb),
    () => true,
    timeoutMs,
  );
}
