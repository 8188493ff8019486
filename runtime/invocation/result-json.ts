import { storableJson } from "../db/storable-json";
import { JetfnError } from "../support/errors";

/**
 * A job's result as the JSON stored in its record, serialised once here so that a value JSON
 * cannot hold (a BigInt, a circular object, a `toJSON` that throws) fails the invocation that
 * returned it with E_OUTPUT_INVALID, instead of the commit or the batch that would store it.
 * A result above `maxBytes` (the NATS server's max payload: it could never be read back by
 * `status` or `result`) fails with E_PAYLOAD_TOO_LARGE.
 */
export function resultJson(result: unknown, fn: string, maxBytes: number | undefined): string {
  let json: string;
  try {
    json = storableJson(result);
  } catch (error) {
    // V8 refuses to build a string past about 512 MiB: a result too large, not a malformed one.
    const reason = typeof (error as Error)?.message === "string" ? (error as Error).message : "serialising it threw";
    const tooLong = (error as Error)?.name === "RangeError" && /string length/i.test(reason);
    throw new JetfnError(
      tooLong ? "E_PAYLOAD_TOO_LARGE" : "E_OUTPUT_INVALID",
      `the result of ${fn} cannot be stored as JSON: ${reason}`,
      { cause: error },
    );
  }
  // A UTF-8 byte is at most 3 per UTF-16 unit: most results are far below the limit without counting.
  if (maxBytes !== undefined && json.length * 3 > maxBytes) {
    const bytes = Buffer.byteLength(json);
    if (bytes > maxBytes) {
      throw new JetfnError(
        "E_PAYLOAD_TOO_LARGE",
        `the result of ${fn} is ${bytes} bytes of JSON; the NATS server accepts at most ${maxBytes} bytes per message`,
      );
    }
  }
  return json;
}
