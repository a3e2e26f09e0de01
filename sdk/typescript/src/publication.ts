import type { WirePublication } from "./protocol.js";

/** A publication delivered to a subscription. */
export interface Publication<T = unknown> {
  /** The channel it was published on. */
  channel: string;
  /** The event name, e.g. `message.created`. */
  event: string;
  /** The published JSON value (data: never insert it into HTML unescaped). */
  data: T;
  /** Offset in the channel's history; 0 on channels without history. */
  offset: number;
  /** The channel's history epoch; "" on channels without history. */
  epoch: string;
  /** Server time of the publish, Unix milliseconds. */
  ts: number;
  /** The sender's user id, on client publishes only (stamped by the gateway). */
  from?: string;
}

/** Converts the wire shape of a publication. */
export function toPublication<T = unknown>(channel: string, wire: WirePublication): Publication<T> {
  const publication: Publication<T> = {
    channel,
    event: wire.event,
    data: wire.data as T,
    offset: wire.offset ?? 0,
    epoch: wire.epoch ?? "",
    ts: wire.ts ?? 0,
  };
  if (wire.from !== undefined) publication.from = wire.from;
  return publication;
}

/** Event name → the type of its `data`, to type {@link Subscription.on}. */
export type EventMap = { [event: string]: unknown };
