import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

// Builds the demo page into demo/dist, which demo/serve.mjs serves.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Top-level await in main.tsx (reading /config.json before the first render).
    target: "es2022",
  },
});
