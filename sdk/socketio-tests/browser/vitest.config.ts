import { defineConfig } from "vitest/config";

// `npm run test:browser`: the socket.io-client browser bundle in headless Chromium. Not part of
// `npm test` (it needs Chromium).
export default defineConfig({
  test: {
    include: ["browser/**/*.test.ts"],
    environment: "node",
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
