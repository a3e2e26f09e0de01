/** The open room's messages under its introduction, following new ones while at the bottom. */
import { useLayoutEffect, useRef } from "react";
import { continues, type ChatMessage } from "../feed.js";
import type { Room } from "../rooms.js";
import { Message } from "./Message.js";

interface MessageListProps {
  room: Room;
  messages: readonly ChatMessage[];
  me: string;
  loaded: boolean;
  onReact: (message: ChatMessage, emoji: string) => void;
  onRetry: (id: string) => void;
}

export function MessageList({ room, messages, me, loaded, onReact, onRetry }: MessageListProps) {
  const list = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const last = messages.at(-1);
  // Follow new messages while the list is scrolled to the bottom, and always after sending.
  useLayoutEffect(() => {
    const element = list.current;
    if (element && (atBottom.current || last?.from === me)) {
      element.scrollTop = element.scrollHeight;
    }
  }, [messages.length, last, me]);
  return (
    <div
      className="messages"
      ref={list}
      data-testid="messages"
      data-loaded={loaded}
      onScroll={(event) => {
        const element = event.currentTarget;
        atBottom.current = element.scrollHeight - element.scrollTop - element.clientHeight < 40;
      }}
    >
      <div className="room-intro">
        <h2>
          Welcome to <span className="hash">#</span>
          {room.id}
        </h2>
        <p>
          This is the start of the <b>#{room.id}</b> channel. Messages are kept by the gateway for
          an hour (the last 100 events); open a second window to chat with yourself.
        </p>
      </div>
      {messages.map((message, index) => (
        <Message
          key={message.id}
          message={message}
          me={me}
          grouped={continues(messages[index - 1], message)}
          onReact={onReact}
          onRetry={onRetry}
        />
      ))}
    </div>
  );
}
