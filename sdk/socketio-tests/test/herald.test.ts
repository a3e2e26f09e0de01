/**
 * The compatibility suite against the Herald binary, with Herald's own recovery cases.
 * Skipped, with the reason, while there is no binary or it has no Socket.IO endpoint;
 * HERALD_SOCKETIO_REQUIRED=1 makes that a failure.
 */
import { describe, it } from "vitest";
import { compatSuite } from "./compat.js";
import { startHerald } from "./helpers/herald.js";
import { heraldRecoveryCases } from "./recovery.js";

const herald = await startHerald();

if (!("unavailable" in herald)) {
  const suite = compatSuite(async () => herald);
  describe("connection state recovery, Herald's own cases", () => heraldRecoveryCases(suite));
} else if (process.env["HERALD_SOCKETIO_REQUIRED"] === "1") {
  it("has a herald binary with Socket.IO", () => {
    throw new Error(herald.unavailable);
  });
} else {
  console.warn(`Socket.IO suite against Herald skipped: ${herald.unavailable}`);
  describe.skip(`skipped: ${herald.unavailable}`, () => {
    compatSuite(() => Promise.reject(new Error(herald.unavailable)));
  });
}
