/**
 * `npm run bench:recovery`: how long a client takes to get back to a recovered subscription
 * after the gateway closes it with 4200 (drain: reconnect now, with jitter). Starts the
 * debug gateway the way the integration tests do, then 20 times: gRPC `Disconnect` → the
 * subscription's `recovered` event, timed from the call. Prints the median and p90 with the
 * default 0–1 s reconnect jitter, and again with no jitter (the protocol's own cost).
 */
import WebSocket from "ws";
import { createClient } from "../src/index.js";
import { startGateway } from "../test/helpers/gateway.js";
import { connectApi } from "../test/helpers/grpc.js";
import { mintToken } from "../test/helpers/token.js";
import { waitFor } from "../test/helpers/wait.js";

const ROUNDS = 20;

function percentile(sorted: number[], p: number): number {
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)] as number;
}

async function run(label: string, jitterMs: number, transport: "websocket" | "sse") {
  const gateway = await startGateway();
  const api = connectApi(gateway.grpcAddr, gateway.apiKey);
  const user = "bench";
  const client = createClient({
    url: gateway.wsUrl,
    WebSocket,
    transport,
    getToken: () => mintToken(gateway.secret, { sub: user }),
    backoff: { jitterMs },
  });
  try {
    client.connect();
    const channel = "org:acme:ch:bench";
    const sub = client.subscribe(channel);
    await waitFor("the first subscribe", (cb) => sub.on("subscribed", cb));
    await api.publish(channel, "m", { n: 0 });
    const times: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const recovered = waitFor(
        "recovered",
        (cb) => sub.on("recovered", cb),
        () => true,
        15_000,
      );
      const start = performance.now();
      const closed = await api.disconnect(user, 4200, "bench");
      if (closed !== 1) throw new Error(`Disconnect closed ${closed} connections`);
      await recovered;
      times.push(performance.now() - start);
      // One publication per round, recovered by the next.
      await api.publish(channel, "m", { n: round });
    }
    const sorted = [...times].sort((a, b) => a - b);
    const fmt = (ms: number) => `${ms.toFixed(1)} ms`;
    console.log(
      `${label.padEnd(34)} median ${fmt(percentile(sorted, 50)).padStart(9)}   p90 ${fmt(percentile(sorted, 90)).padStart(9)}   min ${fmt(sorted[0] as number).padStart(9)}   max ${fmt(sorted.at(-1) as number).padStart(9)}`,
    );
  } finally {
    client.disconnect();
    api.close();
    await gateway.stop();
  }
}

console.log(
  `disconnect (gRPC, code 4200) → recovered, ${ROUNDS} rounds each, debug gateway on loopback`,
);
await run("websocket, default 0-1 s jitter", 1000, "websocket");
await run("websocket, no jitter", 0, "websocket");
await run("sse, no jitter", 0, "sse");
