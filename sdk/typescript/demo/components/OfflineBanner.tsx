/** While not connected: that the page is offline or reconnecting, and how many messages wait. */
import { useConnectionState, useHerald } from "../../src/react/index.js";

export function OfflineBanner({ queued }: { queued: number }) {
  const client = useHerald();
  const { state } = useConnectionState();
  if (state === "connected" || state === "connecting") return null;
  const stopped = state === "disconnected" || state === "permanently_disconnected";
  return (
    <div className="offline-banner" role="status" data-testid="offline-banner" data-queued={queued}>
      <span>
        {stopped
          ? "You are offline."
          : state === "offline"
            ? "No network. Reconnecting when it is back…"
            : "Connection lost. Reconnecting…"}
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
