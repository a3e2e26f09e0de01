/** The connection's state, its latency and transport, and why the last connection ended. */
import { useEffect, useState } from "react";
import { useConnectionState, useHerald } from "../../src/react/index.js";

const STATE_LABELS: Record<string, string> = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "No network",
  disconnected: "Disconnected",
  permanently_disconnected: "Offline",
};

export function ConnectionBadge() {
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
