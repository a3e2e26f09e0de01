/**
 * The signed-in page: the sidebar (connection, rooms, the user), the open room (header,
 * offline banner, messages, composer) and its members. Holds what the parts share: the open
 * room, the rooms' feeds, the outbox and the read marks.
 */
import { useMemo, useState } from "react";
import { useConnectionState, useHerald } from "../../src/react/index.js";
import { EMPTY_FEED, foldMessages, type ChatMessage } from "../feed.js";
import { useFeeds } from "../hooks/useFeeds.js";
import { useOutbox } from "../hooks/useOutbox.js";
import { useReadMarks } from "../hooks/useReadMarks.js";
import { useStatuses } from "../hooks/useStatuses.js";
import { ROOMS } from "../rooms.js";
import { Composer } from "./Composer.js";
import { Members } from "./Members.js";
import { MessageList } from "./MessageList.js";
import { OfflineBanner } from "./OfflineBanner.js";
import { RoomSync } from "./RoomSync.js";
import { Sidebar } from "./Sidebar.js";

export function Chat({ user, onSignOut }: { user: string; onSignOut: () => void }) {
  const client = useHerald();
  const [roomId, setRoomId] = useState(ROOMS[0]!.id);
  const room = ROOMS.find((r) => r.id === roomId) ?? ROOMS[0]!;
  const [{ feeds, loaded }, dispatch] = useFeeds();
  const { pending, send, retry } = useOutbox(user, feeds);
  const seen = useReadMarks(feeds, loaded, room.id);
  const { state } = useConnectionState();
  const statusOf = useStatuses();

  const react = (message: ChatMessage, emoji: string) => {
    const mine = message.reactions.find((r) => r.emoji === emoji)?.users.includes(user) ?? false;
    const event = mine ? "reaction.removed" : "reaction.added";
    client
      .publish(room.channel, event, { messageId: message.id, emoji })
      .catch((error: unknown) => {
        console.warn("reaction failed:", error);
      });
  };

  const feed = feeds[room.channel] ?? EMPTY_FEED;
  const roomPending = pending[room.channel];
  const offline = state !== "connected";
  const messages = useMemo(
    () => foldMessages(feed, user, roomPending, offline),
    [feed, user, roomPending, offline],
  );
  const queued = offline
    ? Object.values(pending).reduce((n, items) => n + items.filter((p) => !p.failed).length, 0)
    : 0;

  return (
    <div className="app" data-testid="app" data-user={user}>
      {ROOMS.map((r) => (
        <RoomSync key={r.channel} channel={r.channel} dispatch={dispatch} />
      ))}
      <Sidebar
        user={user}
        openRoom={room}
        onOpenRoom={setRoomId}
        feeds={feeds}
        seen={seen}
        statusOf={statusOf}
        onSignOut={onSignOut}
      />

      <main className="room-view">
        <header className="room-header">
          <h1 data-testid="room-title">
            <span className="hash">#</span>
            {room.id}
          </h1>
          <span className="topic">{room.topic}</span>
          <code className="channel-name">{room.channel}</code>
        </header>
        <OfflineBanner queued={queued} />
        <MessageList
          key={room.channel}
          room={room}
          messages={messages}
          me={user}
          loaded={loaded[room.channel] ?? false}
          onReact={react}
          onRetry={(id) => retry(room.channel, id)}
        />
        <Composer
          key={`composer-${room.channel}`}
          room={room}
          onSend={(text) => send(room.channel, text)}
        />
      </main>

      <Members channel={room.channel} me={user} statusOf={statusOf} stale={offline} />
    </div>
  );
}
