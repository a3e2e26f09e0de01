/**
 * Every room's feed (its publications by offset, see ../feed.ts) and whether its first history
 * page arrived, in one reducer: `RoomSync` dispatches what each channel receives.
 */
import { useReducer, type Dispatch } from "react";
import type { Publication } from "../../src/index.js";
import { addPublications, EMPTY_FEED, type Feed } from "../feed.js";

export interface Feeds {
  feeds: Readonly<Record<string, Feed>>;
  /** Rooms whose first history page arrived. */
  loaded: Readonly<Record<string, boolean>>;
}

export type FeedAction =
  | { type: "publications"; channel: string; publications: readonly Publication[] }
  | { type: "history"; channel: string; publications: readonly Publication[] }
  | { type: "reset"; channel: string };

function feedsReducer(state: Feeds, action: FeedAction): Feeds {
  const current = state.feeds[action.channel] ?? EMPTY_FEED;
  switch (action.type) {
    case "reset":
      return {
        feeds: { ...state.feeds, [action.channel]: EMPTY_FEED },
        loaded: { ...state.loaded, [action.channel]: false },
      };
    case "publications":
    case "history": {
      const next = addPublications(current, action.publications);
      const loaded = action.type === "history" || (state.loaded[action.channel] ?? false);
      if (next === current && loaded === state.loaded[action.channel]) return state;
      return {
        feeds: { ...state.feeds, [action.channel]: next },
        loaded: { ...state.loaded, [action.channel]: loaded },
      };
    }
  }
}

export function useFeeds(): [Feeds, Dispatch<FeedAction>] {
  return useReducer(feedsReducer, { feeds: {}, loaded: {} });
}
