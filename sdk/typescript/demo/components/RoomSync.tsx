import { useEffect, type Dispatch } from "react";
import type { Publication } from "../../src/index.js";
import { useChannelEvent, useHerald } from "../../src/react/index.js";
import type { RoomEvents } from "../feed.js";
import type { FeedAction } from "../hooks/useFeeds.js";
import { HISTORY_LIMIT } from "../rooms.js";

/**
 * Keeps one room's feed: live messages and reactions through `useChannelEvent`, the last
 * page of history once subscribed (from the subscribe's position, so nothing falls between
 * the page and the live stream), and the page again when the gateway's history no longer
 * covers a reconnect (`state_lost`). Renders nothing.
 */
export function RoomSync({
  channel,
  dispatch,
}: {
  channel: string;
  dispatch: Dispatch<FeedAction>;
}) {
  const client = useHerald();
  const add = (_data: unknown, publication: Publication) =>
    dispatch({ type: "publications", channel, publications: [publication] });
  useChannelEvent(channel, "message", add);
  useChannelEvent(channel, "reaction.added", add);
  useChannelEvent(channel, "reaction.removed", add);
  useEffect(() => {
    const subscription = client.subscribe<RoomEvents>(channel);
    let live = true;
    const load = (top: number) => {
      client
        .history(channel, { limit: HISTORY_LIMIT, sinceOffset: Math.max(0, top - HISTORY_LIMIT) })
        .then(
          (history) => {
            if (live) dispatch({ type: "history", channel, publications: history.publications });
          },
          (error: unknown) => {
            // Shown as an empty room; the next (re)subscribe tries again.
            console.warn(`history of ${channel}:`, error);
          },
        );
    };
    subscription.on("subscribed", (info) => {
      if (!info.resubscribed) load(info.position.offset);
    });
    subscription.on("state_lost", (info) => {
      dispatch({ type: "reset", channel });
      load(info.position.offset);
    });
    if (subscription.state === "subscribed") load(subscription.position?.offset ?? 0);
    return () => {
      live = false;
      subscription.unsubscribe();
    };
  }, [client, channel, dispatch]);
  return null;
}
