import { HeraldError } from "./errors.js";
import type { PublishParams, PublishResult } from "./protocol.js";

/** A publish handed to the outbox: it stays there until acknowledged or truly failed. */
export interface OutgoingPublish {
  params: PublishParams & { idempotencyKey: string };
  resolve: (result: PublishResult) => void;
  reject: (error: HeraldError) => void;
}

/** What the outbox needs from the client. */
export interface OutboxHost {
  /** Whether commands can go out now. */
  isConnected(): boolean;
  /** Sends `publish` on the current connection. */
  send(params: PublishParams): Promise<PublishResult>;
  /** The publishes waiting or in flight changed (for the offline queue's persistence). */
  changed(): void;
}

interface Entry {
  item: OutgoingPublish;
  /** Bumped per send: a reply to an older send (before a reconnect) is ignored. */
  attempt: number;
  /** Sent on the current connection, waiting for the reply. */
  inFlight: boolean;
}

interface ChannelLane {
  entries: Entry[];
  /** When the last sends went out, oldest first (at most `perSecond`). */
  sentAt: number[];
  timer: ReturnType<typeof setTimeout> | undefined;
}

const WINDOW_MS = 1000;

/**
 * The publishes of a connected client: at most `perSecond` sends per channel in any second
 * (the excess waits, in order), and each kept until its reply. A publish sent but not
 * answered when the connection drops is sent again after the reconnect with the same
 * idempotency key (the gateway applies it once), so it fails only on a real error reply, a
 * timeout, or `disconnect()`.
 */
export class Outbox {
  private readonly lanes = new Map<string, ChannelLane>();

  /** Creates an empty outbox. */
  constructor(
    private readonly host: OutboxHost,
    private readonly perSecond: number,
  ) {}

  /** Every publish not yet acknowledged, oldest first per channel. */
  items(): OutgoingPublish[] {
    return [...this.lanes.values()].flatMap((lane) => lane.entries.map((e) => e.item));
  }

  /** Adds a publish behind the others of its channel and sends what the throttle allows. */
  add(item: OutgoingPublish): void {
    const channel = item.params.channel;
    let lane = this.lanes.get(channel);
    if (!lane) {
      lane = { entries: [], sentAt: [], timer: undefined };
      this.lanes.set(channel, lane);
    }
    lane.entries.push({ item, attempt: 0, inFlight: false });
    this.host.changed();
    this.pump(channel, lane);
  }

  /** Connected (again): sends, in order, what waits (what was in flight first). */
  connected(): void {
    for (const [channel, lane] of this.lanes) this.pump(channel, lane);
  }

  /** The connection dropped: what was in flight is sent again after the reconnect. */
  disconnected(): void {
    for (const lane of this.lanes.values()) {
      clearTimeout(lane.timer);
      lane.timer = undefined;
      for (const entry of lane.entries) {
        entry.inFlight = false;
        entry.attempt += 1;
      }
    }
  }

  /** Fails and forgets everything (`disconnect()`). */
  failAll(error: HeraldError): void {
    const items = this.items();
    for (const lane of this.lanes.values()) clearTimeout(lane.timer);
    this.lanes.clear();
    for (const item of items) item.reject(error);
    if (items.length > 0) this.host.changed();
  }

  private pump(channel: string, lane: ChannelLane): void {
    if (lane.timer !== undefined || !this.host.isConnected()) return;
    for (const entry of lane.entries) {
      if (entry.inFlight) continue;
      const now = Date.now();
      while (lane.sentAt.length > 0 && (lane.sentAt[0] as number) <= now - WINDOW_MS) {
        lane.sentAt.shift();
      }
      if (lane.sentAt.length >= this.perSecond) {
        const wait = (lane.sentAt[0] as number) + WINDOW_MS - now;
        lane.timer = setTimeout(() => {
          lane.timer = undefined;
          this.pump(channel, lane);
        }, wait);
        return;
      }
      lane.sentAt.push(now);
      this.send(channel, lane, entry);
    }
  }

  private send(channel: string, lane: ChannelLane, entry: Entry): void {
    entry.inFlight = true;
    const attempt = entry.attempt;
    this.host.send(entry.item.params).then(
      (result) => {
        if (entry.attempt !== attempt) return;
        this.remove(channel, lane, entry);
        entry.item.resolve(result);
      },
      (error: unknown) => {
        if (entry.attempt !== attempt) return;
        const heraldError =
          error instanceof HeraldError ? error : new HeraldError("transport", String(error), true);
        // The connection dropped before the reply: `disconnected()` queued it again.
        if (heraldError.code === "disconnected") return;
        this.remove(channel, lane, entry);
        entry.item.reject(heraldError);
      },
    );
  }

  private remove(channel: string, lane: ChannelLane, entry: Entry): void {
    const index = lane.entries.indexOf(entry);
    if (index >= 0) lane.entries.splice(index, 1);
    if (lane.entries.length === 0 && lane.timer === undefined) {
      // The send times are kept while they still count against the window.
      const now = Date.now();
      if (lane.sentAt.every((t) => t <= now - WINDOW_MS)) this.lanes.delete(channel);
    }
    this.host.changed();
  }
}
