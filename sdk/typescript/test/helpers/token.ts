/** Mints HS256 connection tokens with node:crypto, as an app backend would. */
import { createHmac } from "node:crypto";

export interface TokenClaims {
  sub: string;
  /** Seconds from now until `exp`. Default 3600. */
  ttlSeconds?: number;
  orgs?: string[];
  channels?: string[];
  info?: Record<string, unknown>;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/** A signed JWT with `sub`, `exp`, `orgs` (default acme), `channels` (default org:acme:*), `info`. */
export function mintToken(secret: string, claims: TokenClaims): string {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(
    JSON.stringify({
      sub: claims.sub,
      exp: Math.floor(Date.now() / 1000) + (claims.ttlSeconds ?? 3600),
      orgs: claims.orgs ?? ["acme"],
      channels: claims.channels ?? ["org:acme:*"],
      info: claims.info ?? { name: claims.sub },
    }),
  );
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  return `${header}.${payload}.${base64url(signature)}`;
}

/** A signed subscription token (a JWT with `sub`, `channel` and `exp`), as an app backend would mint it. */
export function mintSubscriptionToken(
  secret: string,
  sub: string,
  channel: string,
  ttlSeconds = 3600,
): string {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(
    JSON.stringify({ sub, channel, exp: Math.floor(Date.now() / 1000) + ttlSeconds }),
  );
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  return `${header}.${payload}.${base64url(signature)}`;
}
