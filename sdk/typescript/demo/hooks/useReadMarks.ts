import { useEffect, useState } from "react";
import { advanceRead, EMPTY_FEED, type Feed, type ReadMark } from "../feed.js";
import { ROOMS } from "../rooms.js";

/**
 * Per room, how far it was read (an offset in the feed's epoch): the open room up to its top,
 * other rooms up to where their history page ended when it (re)loaded.
 */
export function useReadMarks(
  feeds: Readonly<Record<string, Feed>>,
  loaded: Readonly<Record<string, boolean>>,
  openRoomId: string,
): Readonly<Record<string, ReadMark>> {
  const [seen, setSeen] = useState<Readonly<Record<string, ReadMark>>>({});
  useEffect(() => {
    setSeen((previous) => {
      let next = previous;
      for (const r of ROOMS) {
        if (!loaded[r.channel]) continue;
        const read = previous[r.channel];
        const advanced = advanceRead(read, feeds[r.channel] ?? EMPTY_FEED, r.id === openRoomId);
        if (advanced !== read) next = { ...next, [r.channel]: advanced };
      }
      return next;
    });
  }, [feeds, loaded, openRoomId]);
  return seen;
}
