/**
 * `herald-client/react`: React (18+) bindings of the Herald client, built on
 * `useSyncExternalStore`.
 *
 * ```tsx
 * <HeraldProvider client={herald}><App /></HeraldProvider>
 * useChannelEvent("org:acme:ch:general", "message.created", (data) => …);
 * const { members, myState, setMyState } = usePresence("org:acme:ch:general");
 * const { typers, setTyping } = useTyping("org:acme:ch:general");
 * const { state, latency, degraded } = useConnectionState();
 * const { call, data, error, loading } = useRpc("message:send");
 * const channels = useServerSubscriptions();
 * ```
 *
 * @packageDocumentation
 */

export { HeraldProvider, useHerald, type HeraldProviderProps } from "./context.js";
export {
  useChannelEvent,
  useConnectionState,
  usePresence,
  useServerSubscriptions,
  useTyping,
  type ConnectionSnapshot,
  type PresenceView,
  type TypingState,
} from "./hooks.js";
export { useInvalidateOn } from "./query.js";
export { useRpc, type RpcState } from "./rpc.js";
