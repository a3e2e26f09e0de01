/**
 * The user's own messages until the gateway sends them back: sending, queued while offline
 * (the client sends them on reconnect), or failed with a retry. A message leaves the outbox
 * when its publication is in the room's feed.
 */
import { useCallback, useEffect, useState } from "react";
import { useHerald } from "../../src/react/index.js";
import { EMPTY_FEED, messageIds, newMessageId, type Feed, type PendingMessage } from "../feed.js";

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
        const ids = messageIds(feeds[channel] ?? EMPTY_FEED);
        const kept = items.filter((item) => !ids.has(item.id));
        if (kept.length !== items.length) changed = true;
        next[channel] = kept;
      }
      return changed ? next : previous;
    });
  }, [feeds]);

  const publishMessage = useCallback(
    (channel: string, item: PendingMessage) => {
      client
        .publish(channel, "message.created", { id: item.id, text: item.text })
        .catch((error: unknown) => {
          console.warn("publish failed:", error);
          setPending((previous) => ({
            ...previous,
            [channel]: (previous[channel] ?? []).map((p) =>
              p.id === item.id ? { ...p, failed: true } : p,
            ),
          }));
        });
    },
    [client],
  );

  const send = (channel: string, text: string) => {
    const item: PendingMessage = { id: newMessageId(user), text, ts: Date.now(), failed: false };
    setPending((previous) => ({
      ...previous,
      [channel]: [...(previous[channel] ?? []), item],
    }));
    publishMessage(channel, item);
  };

  const retry = (channel: string, id: string) => {
    const item = pending[channel]?.find((p) => p.id === id);
    if (!item) return;
    const again = { ...item, failed: false };
    setPending((previous) => ({
      ...previous,
      [channel]: (previous[channel] ?? []).map((p) => (p.id === id ? again : p)),
    }));
    publishMessage(channel, again);
  };

  return { pending, send, retry };
}
