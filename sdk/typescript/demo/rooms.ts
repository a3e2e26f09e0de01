/** The demo's fixed rooms and channels. */

export interface Room {
  id: string;
  channel: string;
  topic: string;
}

export const ROOMS: readonly Room[] = [
  { id: "general", channel: "demo:general", topic: "Company-wide chatter and announcements" },
  { id: "random", channel: "demo:random", topic: "Everything else" },
];
/** Every demo user is a member of org `demo`: its channel carries everyone's status. */
export const ORG_CHANNEL = "org:demo";
/** Messages loaded when a room opens. */
export const HISTORY_LIMIT = 50;
