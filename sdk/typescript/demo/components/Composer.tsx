/** The composer (Enter sends, Shift+Enter breaks the line) and who else is typing in the room. */
import { useState, type KeyboardEvent } from "react";
import { useTyping } from "../../src/react/index.js";
import { MAX_TEXT, typingText } from "../feed.js";
import type { Room } from "../rooms.js";

export function Composer({ room, onSend }: { room: Room; onSend: (text: string) => void }) {
  const [text, setText] = useState("");
  const { typers, setTyping } = useTyping(room.channel);
  const submit = () => {
    const trimmed = text.trim();
    if (!trimmed) return;
    onSend(trimmed);
    setText("");
    setTyping(false);
  };
  const names = typers.map((typer) => typer.name ?? typer.userId);
  return (
    <div className="composer-area">
      <form
        className="composer"
        onSubmit={(event) => {
          event.preventDefault();
          submit();
        }}
      >
        <textarea
          data-testid="composer"
          rows={1}
          value={text}
          maxLength={MAX_TEXT}
          placeholder={`Message #${room.id}`}
          aria-label={`Message #${room.id}`}
          onChange={(event) => {
            setText(event.target.value);
            setTyping(event.target.value.trim() !== "");
          }}
          onBlur={() => setTyping(false)}
          onKeyDown={(event: KeyboardEvent<HTMLTextAreaElement>) => {
            if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
              event.preventDefault();
              submit();
            }
          }}
        />
        <button type="submit" data-testid="send" disabled={text.trim() === ""}>
          Send
        </button>
      </form>
      <div className="typing" data-testid="typing" aria-live="polite">
        {names.length > 0 && (
          <>
            <span className="typing-dots" aria-hidden>
              <i />
              <i />
              <i />
            </span>
            <span data-testid="typing-text">{typingText(names)}</span>
          </>
        )}
      </div>
    </div>
  );
}
