/** A user's initial on a colour of their own, with their status as a dot when given. */
import type { PresenceStatus } from "../../src/index.js";
import { hue } from "../feed.js";

export function Avatar({ user, status }: { user: string; status?: PresenceStatus }) {
  const initial = (user.trim()[0] ?? "?").toUpperCase();
  return (
    <span className="avatar" style={{ background: `hsl(${hue(user)} 50% 42%)` }} aria-hidden>
      {initial}
      {status && <span className={`status-dot ${status}`} />}
    </span>
  );
}
