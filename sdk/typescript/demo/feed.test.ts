import { describe, expect, it } from "vitest";
import type { Publication } from "../src/index.js";
import {
  addPublications,
  advanceRead,
  asMessage,
  countUnread,
  EMPTY_FEED,
  arrived,
  foldMessages,
  typingText,
  unreadCount,
  type Feed,
} from "./feed.js";

let nextOffset = 1;
function pub(event: string, data: unknown, from?: string, offset = nextOffset++): Publication {
  const publication: Publication = {
    channel: "demo:general",
    event,
    data,
    offset,
    epoch: "E1",
    ts: 1000 * offset,
  };
  if (from !== undefined) publication.from = from;
  return publication;
}
/** A message as the demo backend publishes it (over gRPC: no `from`). */
const created = (text: string, user = "ada", offset?: number) =>
  pub("message", { text, user, ts: 7 }, undefined, offset);
const added = (messageId: string, emoji: string, from: string, offset?: number) =>
  pub("reaction.added", { messageId, emoji }, from, offset);
const removed = (messageId: string, emoji: string, from: string, offset?: number) =>
  pub("reaction.removed", { messageId, emoji }, from, offset);

function feedOf(...publications: Publication[]): Feed {
  return addPublications(EMPTY_FEED, publications);
}

describe("the demo's feed", () => {
  it("keeps each offset once, whether it came live, recovered or from history", () => {
    const a = created("hi", "ada", 1);
    const b = created("hello", "bob", 2);
    const live = feedOf(b);
    const merged = addPublications(live, [a, b]);
    expect([...merged.publications.keys()].sort()).toEqual([1, 2]);
    expect(addPublications(merged, [a])).toBe(merged); // nothing new: same object
    expect(foldMessages(merged, "ada").map((m) => [m.id, m.text, m.from, m.ts])).toEqual([
      ["1", "hi", "ada", 7],
      ["2", "hello", "bob", 7],
    ]);
  });

  it("orders by offset, known by it", () => {
    const feed = feedOf(created("second", "ada", 5), created("first", "bob", 3));
    expect(foldMessages(feed, "ada").map((m) => [m.id, m.offset])).toEqual([
      ["3", 3],
      ["5", 5],
    ]);
  });

  it("applies reactions in offset order, per user, whatever order they arrived in", () => {
    const message = created("hi", "ada", 1);
    const feed = addPublications(feedOf(message, removed("1", "👍", "bob", 4)), [
      added("1", "👍", "bob", 2),
      added("1", "👍", "carol", 3),
      added("1", "🎉", "bob", 5),
      added("1", "🎉", "bob", 6), // twice by one user: one
    ]);
    expect(foldMessages(feed, "ada")[0]?.reactions).toEqual([
      { emoji: "👍", users: ["carol"] },
      { emoji: "🎉", users: ["bob"] },
    ]);
  });

  it("ignores malformed data and reactions to unknown messages", () => {
    const feed = feedOf(
      pub("message", { text: "x", user: 7 }),
      pub("message", "just a string"),
      pub("message", { text: "", user: "ada" }),
      pub("message", { text: "x", user: "<b>" }),
      pub("reaction.added", { messageId: "nope", emoji: "👍" }, "ada"),
      pub("reaction.added", { messageId: "1", emoji: 5 }, "ada"),
      pub("something.else", { text: "z", user: "ada" }),
    );
    expect(foldMessages(feed, "ada")).toEqual([]);
    expect(asMessage({ text: "<b>x</b>", user: "ada" })).toEqual({ text: "<b>x</b>", user: "ada" });
  });

  it("starts over on a new epoch", () => {
    const feed = feedOf(created("old", "ada", 1));
    const next = addPublications(feed, [{ ...created("new", "ada", 1), epoch: "E2" }]);
    expect(next.epoch).toBe("E2");
    expect(foldMessages(next, "ada").map((m) => m.text)).toEqual(["new"]);
  });

  it("lists pending messages after the feed until they come back", () => {
    const after = { epoch: "E1", offset: 1 };
    const feed = feedOf(created("hi", "ada", 1), created("hi", "ada", 2));
    const pending = [
      { id: "p1", text: "hi", ts: 5, failed: false, after },
      { id: "p2", text: "queued", ts: 6, failed: false, after },
      { id: "p3", text: "lost", ts: 7, failed: true, after },
    ];
    expect(foldMessages(feed, "ada", pending).map((m) => [m.id, m.status, m.from])).toEqual([
      ["1", "sent", "ada"],
      ["2", "sent", "ada"],
      ["p2", "sending", "ada"],
      ["p3", "failed", "ada"],
    ]);
    expect(foldMessages(feed, "ada", pending, true).map((m) => m.status)).toEqual([
      "sent",
      "sent",
      "queued",
      "failed",
    ]);
  });

  it("finds pending messages in the feed: at their offset, else by text after they were sent", () => {
    const feed = feedOf(
      created("same", "ada", 1),
      created("same", "bob", 2),
      created("same", "ada", 3),
      created("same", "ada", 4),
    );
    const pending = (id: string, after: number, offset?: number) => ({
      id,
      text: "same",
      ts: 1,
      failed: false,
      after: { epoch: "E1", offset: after },
      ...(offset === undefined ? {} : { offset }),
    });
    // Sent after offset 1: ada's 3 and 4 are theirs, one each; not bob's 2, nor ada's 1.
    expect([...arrived(feed, "ada", [pending("a", 1), pending("b", 1), pending("c", 1)])]).toEqual([
      "a",
      "b",
    ]);
    // With the offset the backend answered: only that one.
    expect([...arrived(feed, "ada", [pending("a", 0, 5), pending("b", 0, 4)])]).toEqual(["b"]);
    // Sent in another epoch: any of ada's.
    expect([
      ...arrived(feed, "ada", [{ ...pending("a", 9), after: { epoch: "E0", offset: 9 } }]),
    ]).toEqual(["a"]);
  });

  it("counts unread messages from others past an offset", () => {
    const feed = feedOf(
      created("1", "bob", 1),
      created("2", "ada", 2),
      added("1", "👍", "bob", 3),
      created("3", "bob", 4),
    );
    expect(countUnread(feed, 0, "ada")).toBe(2);
    expect(countUnread(feed, 1, "ada")).toBe(1);
    expect(countUnread(feed, 4, "ada")).toBe(0);
  });

  it("keeps read marks: the open room at its top, others where they were", () => {
    const empty = EMPTY_FEED;
    const feed = feedOf(created("1", "bob", 1), created("2", "bob", 2));
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
    const more = addPublications(feed, [created("3", "bob", 3)]);
    expect(unreadCount(more, opened, "ada")).toBe(1);
    // History lost (new epoch): the new page counts as read.
    const lost = feedOf({ ...created("4", "bob", 1), epoch: "E2" });
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
