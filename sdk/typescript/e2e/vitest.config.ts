import { defineConfig } from "vitest/config";

// `npm run test:e2e`: the demo chat in headless Chromium against `target/debug/herald serve --dev`.
// Not part of `npm test` (it needs Chromium and the gateway binary with the demo built in).
export default defineConfig({
  test: {
    include: ["e2e/**/*.test.ts"],
    environment: "node",
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
