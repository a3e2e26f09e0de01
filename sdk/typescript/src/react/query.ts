import { useEffect, useRef } from "react";
import type { QueryClientLike } from "../events.js";
import type { Publication } from "../publication.js";
import { useHerald } from "./context.js";

/**
 * While mounted, invalidates TanStack Query queries when `event` is published on `channel`:
 * the "send ids, refetch with your API" pattern, with the client of the nearest
 * `HeraldProvider` (outside React, use `herald.invalidateOn(queryClient, channel, event, toQueryKey)`).
 * `toQueryKey` maps a publication to a query key, or to null to skip it.
 */
export function useInvalidateOn<T = unknown>(
  queryClient: QueryClientLike,
  channel: string,
  event: string,
  toQueryKey: (data: T, publication: Publication<T>) => unknown[] | null | undefined,
): void {
  const client = useHerald();
  const latest = useRef(toQueryKey);
  useEffect(() => {
    latest.current = toQueryKey;
  });
  useEffect(
    () =>
      client.invalidateOn<T>(queryClient, channel, event, (data, publication) =>
        latest.current(data, publication),
      ),
    [client, queryClient, channel, event],
  );
}
