/**
 * One message: author and time (only the time when it continues the previous one), its text,
 * its delivery state, its reactions, and a bar to react once it is sent.
 */
import { REACTIONS, type ChatMessage } from "../feed.js";
import { Avatar } from "./Avatar.js";

function formatTime(ts: number): string {
  return new Date(ts).toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
}

interface MessageProps {
  message: ChatMessage;
  me: string;
  grouped: boolean;
  onReact: (message: ChatMessage, emoji: string) => void;
  onRetry: (id: string) => void;
}

export function Message({ message, me, grouped, onReact, onRetry }: MessageProps) {
  const from = message.from || "herald";
  const sent = message.status === "sent";
  return (
    <article
      className={`message${grouped ? " grouped" : ""}${sent ? "" : ` ${message.status}`}`}
      data-testid="message"
      data-id={message.id}
      data-from={from}
      data-status={message.status}
    >
      <div className="gutter">
        {grouped ? (
          <time className="gutter-time" dateTime={new Date(message.ts).toISOString()}>
            {formatTime(message.ts)}
          </time>
        ) : (
          <Avatar user={from} />
        )}
      </div>
      <div className="body">
        {!grouped && (
          <header>
            <span className="author" data-testid="message-author">
              {from}
            </span>
            <time dateTime={new Date(message.ts).toISOString()}>{formatTime(message.ts)}</time>
          </header>
        )}
        <p className="text" data-testid="message-text">
          {message.text}
        </p>
        {message.status === "sending" && <span className="note">Sending…</span>}
        {message.status === "queued" && (
          <span className="note">Queued: sent when you are back online.</span>
        )}
        {message.status === "failed" && (
          <span className="note error">
            Not sent.{" "}
            <button type="button" className="link" onClick={() => onRetry(message.id)}>
              Retry
            </button>
          </span>
        )}
        {message.reactions.length > 0 && (
          <div className="reactions">
            {message.reactions.map((reaction) => {
              const mine = reaction.users.includes(me);
              return (
                <button
                  type="button"
                  key={reaction.emoji}
                  className={mine ? "reaction mine" : "reaction"}
                  data-testid="reaction"
                  data-emoji={reaction.emoji}
                  data-count={reaction.users.length}
                  data-mine={mine}
                  title={reaction.users.join(", ")}
                  onClick={() => onReact(message, reaction.emoji)}
                >
                  <span className="emoji">{reaction.emoji}</span>
                  <span className="count">{reaction.users.length}</span>
                </button>
              );
            })}
          </div>
        )}
      </div>
      {sent && (
        <div className="react-bar" role="toolbar" aria-label="Add a reaction">
          {REACTIONS.map(({ emoji, name }) => (
            <button
              type="button"
              key={name}
              data-testid={`react-${name}`}
              title={`React with ${emoji}`}
              onClick={() => onReact(message, emoji)}
            >
              {emoji}
            </button>
          ))}
        </div>
      )}
    </article>
  );
}
