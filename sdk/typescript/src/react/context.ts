import { createContext, createElement, useContext, type ReactNode } from "react";
import type { HeraldClient } from "../client.js";

const HeraldContext = createContext<HeraldClient | null>(null);

/** Props of {@link HeraldProvider}. */
export interface HeraldProviderProps {
  /** The client the hooks below use (create it once, outside render). */
  client: HeraldClient;
  children?: ReactNode;
}

/**
 * Makes a {@link HeraldClient} available to the hooks of `herald-client/react`. It does not
 * connect or disconnect the client: call `connect()` where the app starts.
 */
export function HeraldProvider({ client, children }: HeraldProviderProps) {
  return createElement(HeraldContext.Provider, { value: client }, children);
}

/** The client of the nearest {@link HeraldProvider}; throws outside one. */
export function useHerald(): HeraldClient {
  const client = useContext(HeraldContext);
  if (!client) {
    throw new Error("useHerald: no <HeraldProvider client={…}> above this component");
  }
  return client;
}
