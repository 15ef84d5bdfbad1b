import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Each test starts real local servers; a slow shared machine needs more than the default.
    testTimeout: 20_000,
  },
});
