/** JSON values to and from the `bytes` fields of the protos. */

/** `value` as UTF-8 JSON; throws a TypeError for what JSON cannot hold (`undefined`, a function). */
export function encodeJson(value: unknown, what: string): Buffer {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`${what} must be a JSON value, got ${typeof value}`);
  return Buffer.from(text, "utf8");
}

/** The JSON value in `bytes`; empty bytes are `null`, as the protos define. */
export function decodeJson<T>(bytes: Uint8Array): T {
  if (bytes.length === 0) return null as T;
  return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("utf8"));
}
