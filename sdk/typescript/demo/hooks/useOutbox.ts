/**
 * The user's own messages until the gateway sends them back: sending, queued while offline
 * (the client sends them on reconnect), or failed with a retry. A message is sent with
 * `rpc("message:send")` to the demo backend, which publishes it; it leaves the outbox when
 * its publication is in the room's feed.
 */
import { useCallback, useEffect, useState } from "react";
import { useHerald } from "../../src/react/index.js";
import {
  arrived,
  EMPTY_FEED,
  newMessageId,
  topOffset,
  type Feed,
  type PendingMessage,
} from "../feed.js";

export interface Outbox {
  /** Per channel, the messages not yet seen in its feed. */
  pending: Readonly<Record<string, readonly PendingMessage[]>>;
  send(channel: string, text: string): void;
  retry(channel: string, id: string): void;
}

export function useOutbox(user: string, feeds: Readonly<Record<string, Feed>>): Outbox {
  const client = useHerald();
  const [pending, setPending] = useState<Readonly<Record<string, readonly PendingMessage[]>>>({});

  // Pending messages that came back as publications are done.
  useEffect(() => {
    setPending((previous) => {
      let changed = false;
      const next: Record<string, readonly PendingMessage[]> = {};
      for (const [channel, items] of Object.entries(previous)) {
        const back = arrived(feeds[channel] ?? EMPTY_FEED, user, items);
        const kept = items.filter((item) => !back.has(item.id));
        if (kept.length !== items.length) changed = true;
        next[channel] = kept;
      }
      return changed ? next : previous;
    });
  }, [feeds, user]);

  const update = useCallback(
    (channel: string, id: string, change: Partial<PendingMessage>) =>
      setPending((previous) => ({
        ...previous,
        [channel]: (previous[channel] ?? []).map((p) => (p.id === id ? { ...p, ...change } : p)),
      })),
    [],
  );

  const sendMessage = useCallback(
    (channel: string, item: PendingMessage) => {
      client.rpc<{ offset?: unknown } | null>("message:send", { channel, text: item.text }).then(
        (result) => {
          const offset = result?.offset;
          if (typeof offset === "number") update(channel, item.id, { offset });
        },
        (error: unknown) => {
          console.warn("message:send failed:", error);
          update(channel, item.id, { failed: true });
        },
      );
    },
    [client, update],
  );

  const send = (channel: string, text: string) => {
    const feed = feeds[channel] ?? EMPTY_FEED;
    const item: PendingMessage = {
      id: newMessageId(user),
      text,
      ts: Date.now(),
      failed: false,
      after: { epoch: feed.epoch, offset: topOffset(feed) },
    };
    setPending((previous) => ({
      ...previous,
      [channel]: [...(previous[channel] ?? []), item],
    }));
    sendMessage(channel, item);
  };

  const retry = (channel: string, id: string) => {
    const item = pending[channel]?.find((p) => p.id === id);
    if (!item) return;
    const feed = feeds[channel] ?? EMPTY_FEED;
    const again: PendingMessage = {
      ...item,
      failed: false,
      after: { epoch: feed.epoch, offset: topOffset(feed) },
    };
    update(channel, id, again);
    sendMessage(channel, again);
  };

  return { pending, send, retry };
}
