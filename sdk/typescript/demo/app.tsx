/**
 * The demo chat: two rooms, a message list with history and live messages, reactions,
 * typing indicators, a member list with statuses, and the connection's state, all on
 * `herald-client` and its React hooks. Every text from the wire is rendered as text.
 */
import {
  useCallback,
  useEffect,
  useLayoutEffect,
  useMemo,
  useReducer,
  useRef,
  useState,
  type Dispatch,
  type FormEvent,
  type KeyboardEvent,
} from "react";
import {
  CloseCodes,
  type HeraldClient,
  type PresenceStatus,
  type Publication,
  type SettableStatus,
} from "../src/index.js";
import {
  HeraldProvider,
  useChannelEvent,
  useConnectionState,
  useHerald,
  usePresence,
  useTyping,
} from "../src/react/index.js";
import {
  addPublications,
  advanceRead,
  continues,
  EMPTY_FEED,
  foldMessages,
  hue,
  MAX_TEXT,
  messageIds,
  newMessageId,
  REACTIONS,
  typingText,
  unreadCount,
  USER_NAME,
  type ChatMessage,
  type Feed,
  type PendingMessage,
  type ReadMark,
  type RoomEvents,
} from "./feed.js";
import { demoClient, fetchToken, storedUser, storeUser } from "./session.js";

interface Room {
  id: string;
  channel: string;
  topic: string;
}

const ROOMS: readonly Room[] = [
  { id: "general", channel: "demo:general", topic: "Company-wide chatter and announcements" },
  { id: "random", channel: "demo:random", topic: "Everything else" },
];
/** Every demo user is a member of org `demo`: its channel carries everyone's status. */
const ORG_CHANNEL = "org:demo";
/** Messages loaded when a room opens. */
const HISTORY_LIMIT = 50;

// ---- session ---------------------------------------------------------------------------

interface Session {
  user: string;
  client: HeraldClient;
}

/** The whole page: the sign-in form, or the chat of the signed-in user. */
export function App() {
  const [session, setSession] = useState<Session | null>(() => {
    const user = storedUser();
    return user ? { user, client: demoClient(user) } : null;
  });
  useEffect(() => {
    if (!session) return;
    const { client } = session;
    // A development gateway that restarted signs with a new secret, so it refuses the token
    // this page holds (close 4001, "do not reconnect as is"; the client then drops the
    // token). Connect again once with a fresh one.
    let retried = false;
    const offs = [
      client.on("connected", () => {
        retried = false;
      }),
      client.on("disconnected", ({ code }) => {
        if (code !== CloseCodes.unauthorized || retried) return;
        retried = true;
        client.connect();
      }),
    ];
    client.connect();
    return () => {
      for (const off of offs) off();
      client.disconnect();
    };
  }, [session]);

  if (!session) {
    return (
      <SignIn
        onSignIn={(user, token) => {
          storeUser(user);
          setSession({ user, client: demoClient(user, token) });
        }}
      />
    );
  }
  return (
    <HeraldProvider client={session.client}>
      <Chat
        user={session.user}
        onSignOut={() => {
          storeUser(null);
          setSession(null);
        }}
      />
    </HeraldProvider>
  );
}

function SignIn({ onSignIn }: { onSignIn: (user: string, token: string) => void }) {
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    const user = name.trim();
    if (!USER_NAME.test(user)) {
      setError("Use 1–32 letters, digits, - or _.");
      return;
    }
    setBusy(true);
    setError(null);
    fetchToken(user).then(
      (token) => onSignIn(user, token),
      (failure: unknown) => {
        setBusy(false);
        setError(failure instanceof Error ? failure.message : String(failure));
      },
    );
  };
  return (
    <main className="signin">
      <form className="signin-card" onSubmit={submit} data-testid="signin">
        <div className="brand-mark">H</div>
        <h1>Herald demo chat</h1>
        <p>
          Pick a name to join <b>#general</b> and <b>#random</b>. Open a second window with another
          name to chat with yourself.
        </p>
        <label htmlFor="signin-name">Your name</label>
        <input
          id="signin-name"
          data-testid="signin-name"
          value={name}
          autoFocus
          autoComplete="off"
          maxLength={32}
          placeholder="ada"
          onChange={(event) => setName(event.target.value)}
        />
        {error && (
          <p className="signin-error" data-testid="signin-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy} data-testid="signin-submit">
          {busy ? "Joining…" : "Join"}
        </button>
      </form>
    </main>
  );
}

// ---- feeds -----------------------------------------------------------------------------

interface Feeds {
  feeds: Readonly<Record<string, Feed>>;
  /** Rooms whose first history page arrived. */
  loaded: Readonly<Record<string, boolean>>;
}

type FeedAction =
  | { type: "publications"; channel: string; publications: readonly Publication[] }
  | { type: "history"; channel: string; publications: readonly Publication[] }
  | { type: "reset"; channel: string };

function feedsReducer(state: Feeds, action: FeedAction): Feeds {
  const current = state.feeds[action.channel] ?? EMPTY_FEED;
  switch (action.type) {
    case "reset":
      return {
        feeds: { ...state.feeds, [action.channel]: EMPTY_FEED },
        loaded: { ...state.loaded, [action.channel]: false },
      };
    case "publications":
    case "history": {
      const next = addPublications(current, action.publications);
      const loaded = action.type === "history" || (state.loaded[action.channel] ?? false);
      if (next === current && loaded === state.loaded[action.channel]) return state;
      return {
        feeds: { ...state.feeds, [action.channel]: next },
        loaded: { ...state.loaded, [action.channel]: loaded },
      };
    }
  }
}

/**
 * Keeps one room's feed: live messages and reactions through `useChannelEvent`, the last
 * page of history once subscribed (from the subscribe's position, so nothing falls between
 * the page and the live stream), and the page again when the gateway's history no longer
 * covers a reconnect (`state_lost`). Renders nothing.
 */
function RoomSync({ channel, dispatch }: { channel: string; dispatch: Dispatch<FeedAction> }) {
  const client = useHerald();
  const add = (_data: unknown, publication: Publication) =>
    dispatch({ type: "publications", channel, publications: [publication] });
  useChannelEvent(channel, "message.created", add);
  useChannelEvent(channel, "reaction.added", add);
  useChannelEvent(channel, "reaction.removed", add);
  useEffect(() => {
    const subscription = client.subscribe<RoomEvents>(channel);
    let live = true;
    const load = (top: number) => {
      client
        .history(channel, { limit: HISTORY_LIMIT, sinceOffset: Math.max(0, top - HISTORY_LIMIT) })
        .then(
          (history) => {
            if (live) dispatch({ type: "history", channel, publications: history.publications });
          },
          (error: unknown) => {
            // Shown as an empty room; the next (re)subscribe tries again.
            console.warn(`history of ${channel}:`, error);
          },
        );
    };
    subscription.on("subscribed", (info) => {
      if (!info.resubscribed) load(info.position.offset);
    });
    subscription.on("state_lost", (info) => {
      dispatch({ type: "reset", channel });
      load(info.position.offset);
    });
    if (subscription.state === "subscribed") load(subscription.position?.offset ?? 0);
    return () => {
      live = false;
      subscription.unsubscribe();
    };
  }, [client, channel, dispatch]);
  return null;
}

/** Each user's status in org `demo`: from the org channel's presence and its `status` pushes. */
function useStatuses(): (user: string) => PresenceStatus {
  const client = useHerald();
  const orgMembers = usePresence(ORG_CHANNEL);
  const [pushed, setPushed] = useState<Readonly<Record<string, PresenceStatus>>>({});
  useEffect(
    () =>
      client.on("status", (change) => {
        if (change.org === "demo") {
          setPushed((previous) => ({ ...previous, [change.userId]: change.status }));
        }
      }),
    [client],
  );
  return useCallback(
    (user: string) =>
      orgMembers.find((member) => member.userId === user)?.status ?? pushed[user] ?? "online",
    [orgMembers, pushed],
  );
}

// ---- chat ------------------------------------------------------------------------------

function Chat({ user, onSignOut }: { user: string; onSignOut: () => void }) {
  const client = useHerald();
  const [roomId, setRoomId] = useState(ROOMS[0]!.id);
  const room = ROOMS.find((r) => r.id === roomId) ?? ROOMS[0]!;
  const [{ feeds, loaded }, dispatch] = useReducer(feedsReducer, { feeds: {}, loaded: {} });
  const [pending, setPending] = useState<Readonly<Record<string, readonly PendingMessage[]>>>({});
  /** Per room, how far it was read (an offset in the feed's epoch). */
  const [seen, setSeen] = useState<Readonly<Record<string, ReadMark>>>({});
  const [status, setStatus] = useState<SettableStatus>("online");
  const { state } = useConnectionState();
  const statusOf = useStatuses();

  // Pending messages that came back as publications are done.
  useEffect(() => {
    setPending((previous) => {
      let changed = false;
      const next: Record<string, readonly PendingMessage[]> = {};
      for (const [channel, items] of Object.entries(previous)) {
        const ids = messageIds(feeds[channel] ?? EMPTY_FEED);
        const kept = items.filter((item) => !ids.has(item.id));
        if (kept.length !== items.length) changed = true;
        next[channel] = kept;
      }
      return changed ? next : previous;
    });
  }, [feeds]);

  // What was read: the open room up to its top, other rooms up to where their history page
  // ended when it (re)loaded.
  useEffect(() => {
    setSeen((previous) => {
      let next = previous;
      for (const r of ROOMS) {
        if (!loaded[r.channel]) continue;
        const read = previous[r.channel];
        const advanced = advanceRead(read, feeds[r.channel] ?? EMPTY_FEED, r.id === room.id);
        if (advanced !== read) next = { ...next, [r.channel]: advanced };
      }
      return next;
    });
  }, [feeds, loaded, room.id]);

  const publishMessage = useCallback(
    (channel: string, item: PendingMessage) => {
      client
        .publish(channel, "message.created", { id: item.id, text: item.text })
        .catch((error: unknown) => {
          console.warn("publish failed:", error);
          setPending((previous) => ({
            ...previous,
            [channel]: (previous[channel] ?? []).map((p) =>
              p.id === item.id ? { ...p, failed: true } : p,
            ),
          }));
        });
    },
    [client],
  );

  const send = (text: string) => {
    const item: PendingMessage = { id: newMessageId(user), text, ts: Date.now(), failed: false };
    setPending((previous) => ({
      ...previous,
      [room.channel]: [...(previous[room.channel] ?? []), item],
    }));
    publishMessage(room.channel, item);
  };

  const retry = (id: string) => {
    const item = pending[room.channel]?.find((p) => p.id === id);
    if (!item) return;
    const again = { ...item, failed: false };
    setPending((previous) => ({
      ...previous,
      [room.channel]: (previous[room.channel] ?? []).map((p) => (p.id === id ? again : p)),
    }));
    publishMessage(room.channel, again);
  };

  const react = (message: ChatMessage, emoji: string) => {
    const mine = message.reactions.find((r) => r.emoji === emoji)?.users.includes(user) ?? false;
    const event = mine ? "reaction.removed" : "reaction.added";
    client
      .publish(room.channel, event, { messageId: message.id, emoji })
      .catch((error: unknown) => {
        console.warn("reaction failed:", error);
      });
  };

  const changeStatus = (next: SettableStatus) => {
    setStatus(next);
    client.setPresenceState(next).catch((error: unknown) => console.warn("status:", error));
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
      <nav className="sidebar">
        <header className="workspace">
          <div className="brand-mark small">H</div>
          <div>
            <div className="workspace-name">Herald demo</div>
            <ConnectionBadge />
          </div>
        </header>
        <div className="section-title">Channels</div>
        <ul className="rooms">
          {ROOMS.map((r) => {
            const unread =
              r.id === room.id
                ? 0
                : unreadCount(feeds[r.channel] ?? EMPTY_FEED, seen[r.channel], user);
            return (
              <li key={r.id}>
                <button
                  type="button"
                  className={r.id === room.id ? "room active" : unread > 0 ? "room unread" : "room"}
                  data-testid={`room-${r.id}`}
                  aria-current={r.id === room.id ? "page" : undefined}
                  onClick={() => setRoomId(r.id)}
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
        <footer className="me" data-testid="me">
          <Avatar user={user} status={statusOf(user)} />
          <div className="me-text">
            <div className="me-name" data-testid="me-name">
              {user}
            </div>
            <select
              className="status-picker"
              data-testid="status-picker"
              aria-label="Your status"
              value={status}
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
      </nav>

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
          onRetry={retry}
        />
        <Composer key={`composer-${room.channel}`} room={room} onSend={send} />
      </main>

      <Members channel={room.channel} me={user} statusOf={statusOf} stale={offline} />
    </div>
  );
}

// ---- connection ------------------------------------------------------------------------

const STATE_LABELS: Record<string, string> = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
  permanently_disconnected: "Offline",
};

function ConnectionBadge() {
  const client = useHerald();
  const { state, latency, degraded } = useConnectionState();
  const transport = client.getTransport();
  // The close code of the last connection says why it ended (4201: the gateway closed it,
  // reconnect now; 1006: the network; 4001: the token).
  const [lastClose, setLastClose] = useState<number | null>(null);
  useEffect(() => client.on("disconnected", ({ code }) => setLastClose(code)), [client]);
  const tone = state === "connected" ? (degraded ? "degraded" : "ok") : "down";
  const title = [
    transport && `over ${transport === "sse" ? "Server-Sent Events" : "WebSocket"}`,
    lastClose !== null && `last close: ${lastClose}`,
  ]
    .filter(Boolean)
    .join(", ");
  return (
    <div
      className={`connection ${tone}`}
      data-testid="connection"
      data-state={state}
      data-transport={transport ?? undefined}
      data-last-close={lastClose ?? undefined}
      title={title}
    >
      <span className="connection-dot" />
      <span>{STATE_LABELS[state] ?? state}</span>
      {state === "connected" && latency !== null && (
        <span className="latency" data-testid="latency">
          {Math.round(latency)} ms
        </span>
      )}
      {state === "connected" && transport === "sse" && <span className="latency">SSE</span>}
    </div>
  );
}

function OfflineBanner({ queued }: { queued: number }) {
  const client = useHerald();
  const { state } = useConnectionState();
  if (state === "connected" || state === "connecting") return null;
  const stopped = state === "disconnected" || state === "permanently_disconnected";
  return (
    <div className="offline-banner" role="status" data-testid="offline-banner" data-queued={queued}>
      <span>
        {stopped ? "You are offline." : "Connection lost. Reconnecting…"}
        {queued > 0 &&
          ` ${queued} ${queued === 1 ? "message" : "messages"} queued, sent when you are back.`}
      </span>
      {stopped && (
        <button type="button" onClick={() => client.connect()}>
          Reconnect
        </button>
      )}
    </div>
  );
}

// ---- messages --------------------------------------------------------------------------

function formatTime(ts: number): string {
  return new Date(ts).toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
}

function Avatar({ user, status }: { user: string; status?: PresenceStatus }) {
  const initial = (user.trim()[0] ?? "?").toUpperCase();
  return (
    <span className="avatar" style={{ background: `hsl(${hue(user)} 50% 42%)` }} aria-hidden>
      {initial}
      {status && <span className={`status-dot ${status}`} />}
    </span>
  );
}

interface MessageListProps {
  room: Room;
  messages: readonly ChatMessage[];
  me: string;
  loaded: boolean;
  onReact: (message: ChatMessage, emoji: string) => void;
  onRetry: (id: string) => void;
}

function MessageList({ room, messages, me, loaded, onReact, onRetry }: MessageListProps) {
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

interface MessageProps {
  message: ChatMessage;
  me: string;
  grouped: boolean;
  onReact: (message: ChatMessage, emoji: string) => void;
  onRetry: (id: string) => void;
}

function Message({ message, me, grouped, onReact, onRetry }: MessageProps) {
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

// ---- composer and typing ---------------------------------------------------------------

function Composer({ room, onSend }: { room: Room; onSend: (text: string) => void }) {
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

// ---- members ---------------------------------------------------------------------------

const STATUS_ORDER: Record<PresenceStatus, number> = { online: 0, busy: 1, away: 2, offline: 3 };
const STATUS_LABELS: Record<PresenceStatus, string> = {
  online: "Online",
  away: "Away",
  busy: "Busy",
  offline: "Offline",
};

function Members({
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
  const members = usePresence(channel);
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
