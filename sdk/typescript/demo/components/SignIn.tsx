/** The sign-in form: a name, checked here, then a token from the development gateway. */
import { useState, type FormEvent } from "react";
import { USER_NAME } from "../feed.js";
import { fetchToken } from "../session.js";

export function SignIn({ onSignIn }: { onSignIn: (user: string, token: string) => void }) {
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
