// drizzle-kit's configuration for the example app's tables: `npx drizzle-kit generate` writes a
// migration into drizzle/ whenever schema/app.ts changes, and `jetfn migrate` applies it (after
// jetfn's own migrations, JETFN_MIGRATIONS names the folder; drizzle/ is the default).
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema/app.ts",
  out: "./drizzle",
});
