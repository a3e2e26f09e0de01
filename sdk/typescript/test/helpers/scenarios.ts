/** Scenarios shared by the WebSocket and SSE integration tests. */
import type { HeraldClient, SubscribedInfo } from "../../src/index.js";
import { active } from "./clients.js";
import type { Api } from "./grpc.js";
import { waitFor } from "./wait.js";

export interface RecoveryRun {
  /** The `n` of every publication delivered, in delivery order. */
  seen: number[];
  /** How many were published. */
  published: number;
  /** The `recovered` event's info. */
  recovered: SubscribedInfo;
  /** Whether `state_lost` fired. */
  stateLost: boolean;
  /** The close codes the client saw. */
  closes: number[];
}

/**
 * Subscribes `client` (of `user`) to `channel`, publishes 10, has the gateway close the
 * connection with `code`, keeps publishing while the client is away until it has recovered
 * (one every 20 ms, so that the 0-1 s reconnect jitter misses fewer than the 100 the channel
 * keeps), publishes 10 more, and waits until all are delivered.
 */
export async function publishThroughDisconnect(
  api: Api,
  client: HeraldClient,
  user: string,
  channel: string,
  code: number,
): Promise<RecoveryRun> {
  const closes: number[] = [];
  client.on("disconnected", (info) => closes.push(info.code));
  client.connect();
  const sub = client.subscribe<{ n: { n: number } }>(channel);
  await active(sub);
  const seen: number[] = [];
  sub.on("n", (data) => seen.push(data.n));
  let stateLost = false;
  sub.on("state_lost", () => (stateLost = true));
  const recovered = waitFor<SubscribedInfo>("recovered", (cb) => sub.on("recovered", cb));
  let done = false;
  void recovered.then(
    () => (done = true),
    () => (done = true),
  );

  let n = 0;
  const publish = () => api.publish(channel, "n", { n: ++n });
  while (n < 10) await publish();
  const closed = await api.disconnect(user, code, "test");
  if (closed !== 1) throw new Error(`Disconnect closed ${closed} connections, not 1`);
  while (!done && n < 300) {
    await publish();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const info = await recovered;
  for (let i = 0; i < 10; i++) await publish();
  if (seen.length < n) {
    await waitFor(
      "the last publication",
      (cb) => sub.on("n", cb),
      () => seen.length >= n,
    );
  }
  return { seen, published: n, recovered: info, stateLost, closes };
}
