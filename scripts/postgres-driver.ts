// The Postgres driver as dist/ bundles it (with this repository's patches), as a file of its own so
// the driver tests can run against an installed package's copy. Not one of the package's exports.
export { default } from "postgres";
