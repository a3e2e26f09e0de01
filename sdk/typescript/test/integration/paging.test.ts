import { describe, expect, it } from "vitest";
import type { SubscribedInfo } from "../../src/index.js";
import { active, makeClient } from "../helpers/clients.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { waitFor } from "../helpers/wait.js";

/** Room for the 105 publications of the test, so the recovery is covered by history. */
const env = await gatewayWithApi({
  config: `
[namespaces.big]
access = "org_member"
history_size = 200
history_ttl = 600
`,
});

type Big = { m: { n: number; pad: string } };

describe("paged replies", () => {
  it("recovers 6 MB of missed publications with the default queue budget, each once, in order", async () => {
    const channel = "big:acme:room";
    const { client } = makeClient(env.gateway, "pia");
    client.connect();
    const sub = client.subscribe<Big>(channel);
    await active(sub);
    const seen: number[] = [];
    const offsets: number[] = [];
    sub.on("m", (data, publication) => {
      seen.push(data.n);
      offsets.push(publication.offset);
    });
    let stateLost = false;
    sub.on("state_lost", () => (stateLost = true));

    // Away while 100 publications of ~60 KB (6 MB, six times the queue budget) are made.
    client.disconnect();
    const closes: number[] = [];
    client.on("disconnected", (info) => closes.push(info.code));
    const pad = "x".repeat(60_000);
    for (let n = 1; n <= 100; n++) await env.api.publish(channel, "m", { n, pad });

    const recovered = waitFor<SubscribedInfo>(
      "recovered",
      (cb) => sub.on("recovered", cb),
      () => true,
      30_000,
    );
    client.connect();
    // More arrive while the client pages through history: live pushes, held back until the
    // last page is delivered.
    for (let n = 101; n <= 105; n++) await env.api.publish(channel, "m", { n, pad });
    const info = await recovered;
    expect(info.recovered).toBe(true);
    expect(info.recoveredPublications).toBeGreaterThanOrEqual(100);
    if (seen.length < 105) {
      await waitFor(
        "all 105 publications",
        (cb) => sub.on("m", cb),
        () => seen.length >= 105,
      );
    }
    const all = Array.from({ length: 105 }, (_, i) => i + 1);
    expect(seen).toEqual(all);
    expect(offsets).toEqual(all);
    expect(stateLost).toBe(false);
    expect(closes).toEqual([]);

    // `history` gathers the same 6 MB from its pages.
    const history = await client.history<Big["m"]>(channel);
    expect(history.publications.map((p) => p.data.n)).toEqual(all);
    expect(history).toMatchObject({ offset: 105, more: false });
    client.disconnect();
  });
});
