import { describe, expect, it } from "vitest";
import type {
  HeraldError,
  SubscribedInfo,
  Subscription,
  UnsubscribedInfo,
} from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { mintSubscriptionToken, mintToken } from "../helpers/token.js";
import { waitFor } from "../helpers/wait.js";

const { gateway, api } = await gatewayWithApi();

describe("re-authorisation", () => {
  it("keeps a subscription token's subscription alive with subRefresh", async () => {
    const channel = "org:gamma:room";
    const { client } = makeClient(gateway, "sam");
    const mintedAt: number[] = [];
    const sub = client.subscribe(channel, {
      getToken: (name) => {
        mintedAt.push(Date.now());
        return mintSubscriptionToken(gateway.secret, "sam", name, 3);
      },
    });
    const subscribes: SubscribedInfo[] = [];
    sub.on("subscribed", (info) => subscribes.push(info));
    const ended: UnsubscribedInfo[] = [];
    sub.on("unsubscribed", (info) => ended.push(info));
    client.connect();
    await active(sub);
    // 3-second tokens back to back, until one is fetched well after the first one's exp
    // (at most 3 s after it was minted) and the gateway's once-a-second expiry check.
    const firstExpiry = Math.floor(mintedAt[0]! / 1000) + 3;
    await waitFor(
      "a token fetched after the first one expired",
      (cb) => {
        const timer = setInterval(cb, 100);
        return () => clearInterval(timer);
      },
      () => (mintedAt.at(-1) ?? 0) > firstExpiry * 1000 + 1100,
      15_000,
    );
    expect(mintedAt.length).toBeGreaterThanOrEqual(3);
    const received = waitFor<unknown>("a publication", (cb) => sub.on("m", cb));
    await api.publish(channel, "m", { n: 1 });
    expect(await received).toEqual({ n: 1 });
    expect(subscribes).toHaveLength(1);
    expect(ended).toEqual([]);
    expect(sub.state).toBe("subscribed");
    client.disconnect();
  });

  it("resubscribes with a new token and recovers after 2401", async () => {
    const channel = "org:gamma:lapsed";
    const { client } = makeClient(gateway, "lea");
    const errors: HeraldError[] = [];
    const sub: Subscription = client.subscribe(channel, {
      // A refresh (while subscribed) gets a token for another channel, so it is refused and
      // the first token lapses; a subscribe gets a good one.
      getToken: (name: string): string =>
        sub.state === "subscribed"
          ? mintSubscriptionToken(gateway.secret, "lea", "org:gamma:other", 60)
          : mintSubscriptionToken(gateway.secret, "lea", name, 2),
    });
    sub.on("error", (error) => errors.push(error));
    client.connect();
    await active(sub);
    const first = waitFor<unknown>("a publication", (cb) => sub.on("m", cb));
    await api.publish(channel, "m", 1);
    await first;
    const recovered = waitFor<SubscribedInfo>("the resubscribe after 2401", (cb) =>
      sub.on("recovered", cb),
    );
    const info = await recovered;
    expect(info.resubscribed).toBe(true);
    expect(errors.some((error) => error.code === 103)).toBe(true);
    client.disconnect();
  });

  it("ends a subscription with 2403 when a refreshed token drops its org, keeping the others", async () => {
    let refreshed = false;
    const { client } = makeClient(gateway, "rita", {
      getToken: () => {
        const token = refreshed
          ? mintToken(gateway.secret, { sub: "rita", ttlSeconds: 3600 })
          : mintToken(gateway.secret, {
              sub: "rita",
              ttlSeconds: 3,
              orgs: ["acme", "beta"],
              channels: ["org:acme:*", "org:beta:*"],
            });
        refreshed = true;
        return token;
      },
    });
    const revoked = client.subscribe("org:beta:general");
    const kept = client.subscribe("org:acme:general");
    const errors: HeraldError[] = [];
    revoked.on("error", (error) => errors.push(error));
    client.connect();
    await reach(client, "connected");
    await Promise.all([active(revoked), active(kept)]);
    const ended = await waitFor<UnsubscribedInfo>(
      "the 2403 unsubscribe",
      (cb) => revoked.on("unsubscribed", cb),
      () => true,
      15_000,
    );
    expect(ended.code).toBe(2403);
    expect(revoked.state).toBe("ended");
    expect(client.getChannels()).toEqual(["org:acme:general"]);
    const received = waitFor<unknown>("a publication on the kept channel", (cb) =>
      kept.on("m", cb),
    );
    await api.publish("org:acme:general", "m", "still here");
    expect(await received).toBe("still here");
    expect(errors).toEqual([]);
    client.disconnect();
  });
});
