import { parseDuration } from "../support/duration";
import { JetfnError } from "../support/errors";

/** `1h` means an hour ago; anything else must be a date or time Date can read. */
export function parseTime(value: string): Date {
  if (/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/.test(value.trim())) return new Date(Date.now() - parseDuration(value));
  const time = Date.parse(value);
  if (Number.isNaN(time))
    throw new JetfnError("E_INPUT_INVALID", `"${value}" is neither a duration (like 2h) nor a date`);
  return new Date(time);
}
