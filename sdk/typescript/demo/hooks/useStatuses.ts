import { useCallback, useEffect, useState } from "react";
import type { PresenceStatus } from "../../src/index.js";
import { useHerald, usePresence } from "../../src/react/index.js";
import { ORG_CHANNEL } from "../rooms.js";

/** Each user's status in org `demo`: from the org channel's presence and its `status` pushes. */
export function useStatuses(): (user: string) => PresenceStatus {
  const client = useHerald();
  const { members: orgMembers } = usePresence(ORG_CHANNEL);
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
