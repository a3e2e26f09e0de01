/**
 * A room's feed, without React: the publications of a `demo:<room>` channel kept by offset,
 * folded into messages with their reactions. Messages are published by the demo backend
 * (the user's `rpc("message:send")`), so a message is known by its offset, and its author is
 * the `user` the backend put in it. History and live publications overlap (the
 * history is fetched after the subscribe, and a recovery replays what was missed), so the
 * feed is keyed by offset and every fold walks it in offset order: each publication counts
 * once, and a reaction removed after it was added stays removed whatever arrived first.
 *
 * Publication data comes from other users: every field is checked here, and the UI renders
 * text as text (React escapes it).
 */
import type { Publication } from "../src/index.js";

/** The reactions offered under each message. */
export const REACTIONS: readonly { emoji: string; name: string }[] = [
  { emoji: "👍", name: "thumbsup" },
  { emoji: "❤️", name: "heart" },
  { emoji: "😂", name: "joy" },
  { emoji: "🎉", name: "tada" },
  { emoji: "👀", name: "eyes" },
];

/** Longest message text accepted, in UTF-16 units (the gateway caps the whole payload at 64 KiB). */
export const MAX_TEXT = 2000;

/** `message` data, as the demo backend publishes it. */
export interface MessageData {
  text: string;
  /** The sender, from the connection the backend was called on. */
  user: string;
  /** Unix ms when the backend published it. */
  ts?: number;
}

/** `reaction.added` / `reaction.removed` data. */
export interface ReactionData {
  messageId: string;
  emoji: string;
}

/** The events of a room, for `herald.subscribe<RoomEvents>(…)`. */
export type RoomEvents = {
  message: MessageData;
  "reaction.added": ReactionData;
  "reaction.removed": ReactionData;
};

/** The publications of one channel epoch, by offset. */
export interface Feed {
  epoch: string;
  publications: ReadonlyMap<number, Publication>;
}

export const EMPTY_FEED: Feed = { epoch: "", publications: new Map() };

/** Adds publications (live, recovered or from history) to a feed; returns it unchanged when nothing is new. */
export function addPublications(feed: Feed, publications: readonly Publication[]): Feed {
  let next: Map<number, Publication> | null = null;
  let epoch = feed.epoch;
  for (const publication of publications) {
    if (publication.offset <= 0) continue;
    if (publication.epoch !== epoch) {
      // A new epoch: the channel's history was lost and the old offsets mean nothing now.
      epoch = publication.epoch;
      next = new Map();
    }
    const map = next ?? feed.publications;
    if (map.has(publication.offset)) continue;
    next ??= new Map(feed.publications);
    next.set(publication.offset, publication);
  }
  return next ? { epoch, publications: next } : feed;
}

/** One reaction on a message: who reacted, in the order they did. */
export interface Reaction {
  emoji: string;
  users: readonly string[];
}

/** A message as shown. */
export interface ChatMessage {
  /** The channel offset as text; a local id for this user's messages not back yet. */
  id: string;
  text: string;
  /** The sender. */
  from: string;
  /** Server time, Unix ms (local time for messages not sent yet). */
  ts: number;
  /** Channel offset; 0 until the gateway has it. */
  offset: number;
  /**
   * `sent`, or for this user's own messages not back from the gateway yet: `sending`,
   * `queued` (sending while offline: in the client's offline queue) or `failed`.
   */
  status: "sent" | "sending" | "queued" | "failed";
  reactions: readonly Reaction[];
}

/** A message of this user's that has not come back as a publication yet. */
export interface PendingMessage {
  /** Local, for retries and React keys. */
  id: string;
  text: string;
  ts: number;
  failed: boolean;
  /** The feed's top when it was sent: its publication comes after. */
  after: { epoch: string; offset: number };
  /** Its offset, once the backend answered with it. */
  offset?: number;
}

/** Checks `message` data from the wire. */
export function asMessage(data: unknown): MessageData | null {
  if (!data || typeof data !== "object") return null;
  const { text, user, ts } = data as Record<string, unknown>;
  if (typeof text !== "string" || text.length === 0) return null;
  if (typeof user !== "string" || !USER_NAME.test(user)) return null;
  const message: MessageData = { text: text.slice(0, MAX_TEXT), user };
  if (typeof ts === "number" && Number.isFinite(ts)) message.ts = ts;
  return message;
}

/** Checks reaction data from the wire. */
export function asReaction(data: unknown): ReactionData | null {
  if (!data || typeof data !== "object") return null;
  const { messageId, emoji } = data as Record<string, unknown>;
  if (typeof messageId !== "string" || messageId.length === 0 || messageId.length > 100) {
    return null;
  }
  if (typeof emoji !== "string" || emoji.length === 0 || emoji.length > 16) return null;
  return { messageId, emoji };
}

/**
 * The messages of a feed in offset order, with their reactions applied in order; then this
 * user's pending messages that are not in the feed yet (see {@link arrived}).
 */
export function foldMessages(
  feed: Feed,
  me: string,
  pending: readonly PendingMessage[] = [],
  offline = false,
): ChatMessage[] {
  const offsets = [...feed.publications.keys()].sort((a, b) => a - b);
  const messages: ChatMessage[] = [];
  const byId = new Map<string, { message: ChatMessage; reactions: Map<string, string[]> }>();
  for (const offset of offsets) {
    const publication = feed.publications.get(offset) as Publication;
    if (publication.event === "message") {
      const data = asMessage(publication.data);
      if (!data) continue;
      const message: ChatMessage = {
        id: String(offset),
        text: data.text,
        from: data.user,
        ts: data.ts ?? publication.ts,
        offset,
        status: "sent",
        reactions: [],
      };
      messages.push(message);
      byId.set(message.id, { message, reactions: new Map() });
    } else if (publication.event === "reaction.added" || publication.event === "reaction.removed") {
      const data = asReaction(publication.data);
      const target = data && byId.get(data.messageId);
      const user = publication.from;
      if (!data || !target || !user) continue;
      const users = target.reactions.get(data.emoji) ?? [];
      const has = users.includes(user);
      if (publication.event === "reaction.added" && !has) {
        target.reactions.set(data.emoji, [...users, user]);
      } else if (publication.event === "reaction.removed" && has) {
        target.reactions.set(
          data.emoji,
          users.filter((u) => u !== user),
        );
      }
    }
  }
  for (const { message, reactions } of byId.values()) {
    message.reactions = [...reactions]
      .filter(([, users]) => users.length > 0)
      .map(([emoji, users]) => ({ emoji, users }));
  }
  const back = arrived(feed, me, pending);
  for (const item of pending) {
    if (back.has(item.id)) continue;
    messages.push({
      id: item.id,
      text: item.text,
      from: me,
      ts: item.ts,
      offset: 0,
      status: item.failed ? "failed" : offline ? "queued" : "sending",
      reactions: [],
    });
  }
  return messages;
}

/**
 * The ids of the pending messages that are in the feed: the one at the offset the backend
 * answered with, or before that answer, the first of this user's messages with the same
 * text published after it was sent (the publication may come before the rpc's reply).
 */
export function arrived(feed: Feed, me: string, pending: readonly PendingMessage[]): Set<string> {
  const back = new Set<string>();
  if (pending.length === 0) return back;
  const mine = [...feed.publications.entries()]
    .filter(([, publication]) => publication.event === "message")
    .map(([offset, publication]) => ({ offset, data: asMessage(publication.data) }))
    .filter(({ data }) => data?.user === me)
    .sort((a, b) => a.offset - b.offset);
  const claimed = new Set<number>();
  for (const item of pending) {
    const sameEpoch = item.after.epoch === feed.epoch;
    const match =
      item.offset !== undefined && sameEpoch
        ? mine.find(({ offset }) => offset === item.offset)
        : mine.find(
            ({ offset, data }) =>
              !claimed.has(offset) &&
              data?.text === item.text &&
              (!sameEpoch || offset > item.after.offset),
          );
    if (!match) continue;
    claimed.add(match.offset);
    back.add(item.id);
  }
  return back;
}

/** How many messages from others a feed holds past `offset`. */
export function countUnread(feed: Feed, afterOffset: number, me: string): number {
  let count = 0;
  for (const [offset, publication] of feed.publications) {
    if (offset <= afterOffset || publication.event !== "message") continue;
    const data = asMessage(publication.data);
    if (data && data.user !== me) count += 1;
  }
  return count;
}

/** How far a room was read: an offset in an epoch ("" while the room was empty). */
export interface ReadMark {
  epoch: string;
  offset: number;
}

/**
 * Where a room is read up to after its feed changed: the top for the open room; for another
 * room, unchanged, unless it was read in an epoch the gateway has since lost (then its new
 * history counts as read). Returns `read` itself when nothing changed.
 */
export function advanceRead(read: ReadMark | undefined, feed: Feed, open: boolean): ReadMark {
  const fresh = read === undefined || (read.epoch !== "" && read.epoch !== feed.epoch);
  if (!open && !fresh) return read;
  const top = topOffset(feed);
  if (read && read.epoch === feed.epoch && read.offset === top) return read;
  return { epoch: feed.epoch, offset: top };
}

/** Messages from others in a room past its read mark (a room read while empty: all of them). */
export function unreadCount(feed: Feed, read: ReadMark | undefined, me: string): number {
  if (read === undefined) return 0;
  if (read.epoch === "") return countUnread(feed, 0, me);
  return read.epoch === feed.epoch ? countUnread(feed, read.offset, me) : 0;
}

/** The top offset of a feed (0 when empty). */
export function topOffset(feed: Feed): number {
  let top = 0;
  for (const offset of feed.publications.keys()) if (offset > top) top = offset;
  return top;
}

/** A new message id: unique enough for a demo, and readable in tests. */
export function newMessageId(me: string, random: () => number = Math.random): string {
  const suffix = Math.floor(random() * 36 ** 6)
    .toString(36)
    .padStart(6, "0");
  return `${me}-${Date.now().toString(36)}-${suffix}`;
}

/** Whether two messages in a row belong to one group (same sender within five minutes). */
export function continues(previous: ChatMessage | undefined, message: ChatMessage): boolean {
  return (
    previous !== undefined &&
    previous.from === message.from &&
    message.ts - previous.ts < 5 * 60_000 &&
    message.ts >= previous.ts
  );
}

/** A stable hue for a user's avatar. */
export function hue(user: string): number {
  let hash = 0;
  for (let i = 0; i < user.length; i += 1) hash = (hash * 31 + user.charCodeAt(i)) >>> 0;
  return hash % 360;
}

/** "Ada is typing…", "Ada and Bob are typing…", "Several people are typing…". */
export function typingText(names: readonly string[]): string {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return "Several people are typing…";
}

/** User names the gateway's `/dev/token` accepts. */
export const USER_NAME = /^[A-Za-z0-9_-]{1,32}$/;
