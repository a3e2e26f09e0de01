/**
 * Connection state recovery on a two-node Herald cluster (its own NATS and Redis, the client
 * behind a TCP proxy): every recovery case, with deliveries crossing nodes and Redis flushed
 * for the lost state, and a client that moves to the other node. Skipped like
 * herald.test.ts.
 */
import { afterEach, describe, it } from "vitest";
import { startHeraldCluster } from "./helpers/herald.js";
import { suiteOn } from "./helpers/suite.js";
import { crossNodeCases, heraldRecoveryCases, recoveryCases } from "./recovery.js";

const cluster = await startHeraldCluster();

if (!("unavailable" in cluster)) {
  const suite = suiteOn(async () => cluster);
  // Each case starts with the proxy at node 0.
  afterEach(() => cluster.route(0));
  describe("connection state recovery on a two-node cluster", () => {
    recoveryCases(suite);
    heraldRecoveryCases(suite);
    crossNodeCases(suite);
  });
} else if (process.env["HERALD_SOCKETIO_REQUIRED"] === "1") {
  it("has a herald binary with Socket.IO, nats-server and redis-server", () => {
    throw new Error(cluster.unavailable);
  });
} else {
  console.warn(`Socket.IO cluster cases skipped: ${cluster.unavailable}`);
  describe.skip(`skipped: ${cluster.unavailable}`, () => it("recovers across nodes"));
}
