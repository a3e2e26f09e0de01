/** The sidebar: the workspace with the connection's state, the rooms, and the signed-in user. */
import type { PresenceStatus } from "../../src/index.js";
import type { Feed, ReadMark } from "../feed.js";
import type { Room } from "../rooms.js";
import { ConnectionBadge } from "./ConnectionBadge.js";
import { Me } from "./Me.js";
import { RoomList } from "./RoomList.js";

interface SidebarProps {
  user: string;
  openRoom: Room;
  onOpenRoom: (roomId: string) => void;
  feeds: Readonly<Record<string, Feed>>;
  seen: Readonly<Record<string, ReadMark>>;
  statusOf: (user: string) => PresenceStatus;
  onSignOut: () => void;
}

export function Sidebar({
  user,
  openRoom,
  onOpenRoom,
  feeds,
  seen,
  statusOf,
  onSignOut,
}: SidebarProps) {
  return (
    <nav className="sidebar">
      <header className="workspace">
        <div className="brand-mark small">H</div>
        <div>
          <div className="workspace-name">Herald demo</div>
          <ConnectionBadge />
        </div>
      </header>
      <div className="section-title">Channels</div>
      <RoomList user={user} openRoom={openRoom} onOpenRoom={onOpenRoom} feeds={feeds} seen={seen} />
      <Me user={user} status={statusOf(user)} onSignOut={onSignOut} />
    </nav>
  );
}
