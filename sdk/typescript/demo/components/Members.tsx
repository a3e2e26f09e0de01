/** The open room's members, one row per user, by status then name. */
import type { PresenceStatus } from "../../src/index.js";
import { usePresence } from "../../src/react/index.js";
import { Avatar } from "./Avatar.js";

const STATUS_ORDER: Record<PresenceStatus, number> = { online: 0, busy: 1, away: 2, offline: 3 };
const STATUS_LABELS: Record<PresenceStatus, string> = {
  online: "Online",
  away: "Away",
  busy: "Busy",
  offline: "Offline",
};

export function Members({
  channel,
  me,
  statusOf,
  stale,
}: {
  channel: string;
  me: string;
  statusOf: (user: string) => PresenceStatus;
  /** Offline: the list is the last one known (the client refetches it after reconnecting). */
  stale: boolean;
}) {
  const { members } = usePresence(channel);
  // One row per user (a user with two tabs is two connections), by status then name.
  const users = [...new Set(members.map((member) => member.userId))]
    .map((user) => ({ user, status: statusOf(user) }))
    .sort(
      (a, b) =>
        STATUS_ORDER[a.status] - STATUS_ORDER[b.status] ||
        a.user.localeCompare(b.user, undefined, { sensitivity: "base" }),
    );
  return (
    <aside
      className={stale ? "members stale" : "members"}
      data-testid="members"
      title={stale ? "Last known members: offline" : undefined}
    >
      <div className="section-title">
        In this channel <span className="count">{users.length}</span>
      </div>
      <ul>
        {users.map(({ user, status }) => (
          <li key={user} data-testid="member" data-user={user} data-status={status}>
            <Avatar user={user} status={status} />
            <span className="member-name">
              {user}
              {user === me && <span className="you"> (you)</span>}
            </span>
            {status !== "online" && <span className="member-status">{STATUS_LABELS[status]}</span>}
          </li>
        ))}
      </ul>
    </aside>
  );
}
