/** The signed-in user at the foot of the sidebar: their status, a picker to set it, sign out. */
import { useState } from "react";
import type { PresenceStatus, SettableStatus } from "../../src/index.js";
import { useHerald } from "../../src/react/index.js";
import { Avatar } from "./Avatar.js";

interface MeProps {
  user: string;
  /** The status the others see (from presence), shown on the avatar. */
  status: PresenceStatus;
  onSignOut: () => void;
}

export function Me({ user, status, onSignOut }: MeProps) {
  const client = useHerald();
  const [picked, setPicked] = useState<SettableStatus>("online");
  const changeStatus = (next: SettableStatus) => {
    setPicked(next);
    client.setStatus(next).catch((error: unknown) => console.warn("status:", error));
  };
  return (
    <footer className="me" data-testid="me">
      <Avatar user={user} status={status} />
      <div className="me-text">
        <div className="me-name" data-testid="me-name">
          {user}
        </div>
        <select
          className="status-picker"
          data-testid="status-picker"
          aria-label="Your status"
          value={picked}
          onChange={(event) => changeStatus(event.target.value as SettableStatus)}
        >
          <option value="online">Online</option>
          <option value="away">Away</option>
          <option value="busy">Busy</option>
        </select>
      </div>
      <button
        type="button"
        className="sign-out"
        title="Sign out"
        data-testid="sign-out"
        onClick={onSignOut}
      >
        Sign out
      </button>
    </footer>
  );
}
