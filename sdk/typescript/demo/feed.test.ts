import { describe, expect, it } from "vitest";
import type { Publication } from "../src/index.js";
import {
  addPublications,
  advanceRead,
  asMessage,
  countUnread,
  EMPTY_FEED,
  foldMessages,
  messageIds,
  typingText,
  unreadCount,
  type Feed,
} from "./feed.js";

let nextOffset = 1;
function pub(event: string, data: unknown, from = "ada", offset = nextOffset++): Publication {
  return { channel: "demo:general", event, data, offset, epoch: "E1", ts: 1000 * offset, from };
}
const created = (id: string, text: string, from = "ada", offset?: number) =>
  pub("message.created", { id, text }, from, offset);
const added = (messageId: string, emoji: string, from: string, offset?: number) =>
  pub("reaction.added", { messageId, emoji }, from, offset);
const removed = (messageId: string, emoji: string, from: string, offset?: number) =>
  pub("reaction.removed", { messageId, emoji }, from, offset);

function feedOf(...publications: Publication[]): Feed {
  return addPublications(EMPTY_FEED, publications);
}

describe("the demo's feed", () => {
  it("keeps each offset once, whether it came live, recovered or from history", () => {
    const a = created("m1", "hi", "ada", 1);
    const b = created("m2", "hello", "bob", 2);
    const live = feedOf(b);
    const merged = addPublications(live, [a, b]);
    expect([...merged.publications.keys()].sort()).toEqual([1, 2]);
    expect(addPublications(merged, [a])).toBe(merged); // nothing new: same object
    expect(foldMessages(merged, "ada").map((m) => m.text)).toEqual(["hi", "hello"]);
  });

  it("orders by offset and shows a message re-sent under the same id once", () => {
    const feed = feedOf(created("m2", "second", "ada", 5), created("m1", "first", "bob", 3));
    const again = addPublications(feed, [created("m1", "first", "bob", 7)]);
    expect(foldMessages(again, "ada").map((m) => [m.id, m.offset])).toEqual([
      ["m1", 3],
      ["m2", 5],
    ]);
  });

  it("applies reactions in offset order, per user, whatever order they arrived in", () => {
    const message = created("m1", "hi", "ada", 1);
    const feed = addPublications(feedOf(message, removed("m1", "👍", "bob", 4)), [
      added("m1", "👍", "bob", 2),
      added("m1", "👍", "carol", 3),
      added("m1", "🎉", "bob", 5),
      added("m1", "🎉", "bob", 6), // twice by one user: one
    ]);
    expect(foldMessages(feed, "ada")[0]?.reactions).toEqual([
      { emoji: "👍", users: ["carol"] },
      { emoji: "🎉", users: ["bob"] },
    ]);
  });

  it("ignores malformed data and reactions to unknown messages", () => {
    const feed = feedOf(
      pub("message.created", { id: 7, text: "x" }),
      pub("message.created", "just a string"),
      pub("message.created", { id: "ok", text: "" }),
      pub("reaction.added", { messageId: "nope", emoji: "👍" }),
      pub("reaction.added", { messageId: "ok", emoji: 5 }),
      pub("something.else", { id: "z", text: "z" }),
    );
    expect(foldMessages(feed, "ada")).toEqual([]);
    expect(asMessage({ id: "a", text: "<b>x</b>" })).toEqual({ id: "a", text: "<b>x</b>" });
  });

  it("starts over on a new epoch", () => {
    const feed = feedOf(created("m1", "old", "ada", 1));
    const next = addPublications(feed, [{ ...created("m2", "new", "ada", 1), epoch: "E2" }]);
    expect(next.epoch).toBe("E2");
    expect(foldMessages(next, "ada").map((m) => m.text)).toEqual(["new"]);
  });

  it("lists pending messages after the feed until they come back", () => {
    const feed = feedOf(created("m1", "hi", "ada", 1));
    const pending = [
      { id: "m1", text: "hi", ts: 5, failed: false },
      { id: "m2", text: "queued", ts: 6, failed: false },
      { id: "m3", text: "lost", ts: 7, failed: true },
    ];
    expect(foldMessages(feed, "ada", pending).map((m) => [m.id, m.status, m.from])).toEqual([
      ["m1", "sent", "ada"],
      ["m2", "sending", "ada"],
      ["m3", "failed", "ada"],
    ]);
    expect(foldMessages(feed, "ada", pending, true).map((m) => m.status)).toEqual([
      "sent",
      "queued",
      "failed",
    ]);
    expect([...messageIds(feed)]).toEqual(["m1"]);
  });

  it("counts unread messages from others past an offset", () => {
    const feed = feedOf(
      created("a", "1", "bob", 1),
      created("b", "2", "ada", 2),
      added("a", "👍", "bob", 3),
      created("c", "3", "bob", 4),
    );
    expect(countUnread(feed, 0, "ada")).toBe(2);
    expect(countUnread(feed, 1, "ada")).toBe(1);
    expect(countUnread(feed, 4, "ada")).toBe(0);
  });

  it("keeps read marks: the open room at its top, others where they were", () => {
    const empty = EMPTY_FEED;
    const feed = feedOf(created("a", "1", "bob", 1), created("b", "2", "bob", 2));
    // A room first seen empty: everything that arrives later is unread.
    const closed = advanceRead(undefined, empty, false);
    expect(closed).toEqual({ epoch: "", offset: 0 });
    expect(advanceRead(closed, feed, false)).toBe(closed);
    expect(unreadCount(feed, closed, "ada")).toBe(2);
    // Opening it reads it.
    const opened = advanceRead(closed, feed, true);
    expect(opened).toEqual({ epoch: "E1", offset: 2 });
    expect(unreadCount(feed, opened, "ada")).toBe(0);
    expect(advanceRead(opened, feed, true)).toBe(opened);
    const more = addPublications(feed, [created("c", "3", "bob", 3)]);
    expect(unreadCount(more, opened, "ada")).toBe(1);
    // History lost (new epoch): the new page counts as read.
    const lost = feedOf({ ...created("d", "4", "bob", 1), epoch: "E2" });
    expect(unreadCount(lost, opened, "ada")).toBe(0);
    expect(advanceRead(opened, lost, false)).toEqual({ epoch: "E2", offset: 1 });
    expect(unreadCount(feed, undefined, "ada")).toBe(0);
  });

  it("says who is typing", () => {
    expect(typingText([])).toBe("");
    expect(typingText(["Ada"])).toBe("Ada is typing…");
    expect(typingText(["Ada", "Bob"])).toBe("Ada and Bob are typing…");
    expect(typingText(["Ada", "Bob", "Cy"])).toBe("Several people are typing…");
  });
});
