// Tests use the same nats-server launcher function authors get from runtime/testing.
export { startNatsServer, type TestNatsOptions, type TestNatsServer } from "../../runtime/testing/nats-server";
