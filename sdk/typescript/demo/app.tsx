/**
 * The demo chat: two rooms, a message list with history and live messages, reactions,
 * typing indicators, a member list with statuses, and the connection's state, all on
 * `herald-client` and its React hooks. Every text from the wire is rendered as text.
 *
 * This file holds the session (who is signed in, and their client); the page is in
 * `components/` (one part of the page a file, `Chat` the layout) and its state in `hooks/`.
 */
import { useEffect, useState } from "react";
import { CloseCodes, type HeraldClient } from "../src/index.js";
import { HeraldProvider } from "../src/react/index.js";
import { Chat } from "./components/Chat.js";
import { SignIn } from "./components/SignIn.js";
import { demoClient, storedUser, storeUser } from "./session.js";

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
