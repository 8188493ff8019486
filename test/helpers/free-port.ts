export { freePort } from "../../runtime/support/free-port";
