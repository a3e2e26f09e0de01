/** The rooms, the open one marked, the others with their unread counts. */
import { EMPTY_FEED, unreadCount, type Feed, type ReadMark } from "../feed.js";
import { ROOMS, type Room } from "../rooms.js";

interface RoomListProps {
  user: string;
  openRoom: Room;
  onOpenRoom: (roomId: string) => void;
  feeds: Readonly<Record<string, Feed>>;
  seen: Readonly<Record<string, ReadMark>>;
}

export function RoomList({ user, openRoom, onOpenRoom, feeds, seen }: RoomListProps) {
  return (
    <ul className="rooms">
      {ROOMS.map((r) => {
        const unread =
          r.id === openRoom.id
            ? 0
            : unreadCount(feeds[r.channel] ?? EMPTY_FEED, seen[r.channel], user);
        return (
          <li key={r.id}>
            <button
              type="button"
              className={r.id === openRoom.id ? "room active" : unread > 0 ? "room unread" : "room"}
              data-testid={`room-${r.id}`}
              aria-current={r.id === openRoom.id ? "page" : undefined}
              onClick={() => onOpenRoom(r.id)}
            >
              <span className="hash">#</span>
              <span className="room-name">{r.id}</span>
              {unread > 0 && (
                <span className="badge" data-testid={`unread-${r.id}`}>
                  {unread}
                </span>
              )}
            </button>
          </li>
        );
      })}
    </ul>
  );
}
