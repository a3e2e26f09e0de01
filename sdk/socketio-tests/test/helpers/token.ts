/**
 * Connection tokens as an app backend mints them (HS256, the claims Herald reads), and their
 * verification by the reference server with Herald's rules and error codes.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export {
  mintSubscriptionToken,
  mintToken,
  type TokenClaims,
} from "../../../typescript/test/helpers/token.js";

/** The claims the reference server uses. */
export interface Claims {
  sub: string;
  exp: number;
  orgs: string[];
  channels: string[];
  info: unknown;
}

/** Herald's error codes the handshake and subscriptions answer with. */
export const UNAUTHORIZED = 101;
export const UNKNOWN_CHANNEL = 102;
export const PERMISSION_DENIED = 103;
export const TOKEN_EXPIRED = 109;

/** A refusal as Herald words it: `message` and `code`. */
export interface Refusal {
  code: number;
  message: string;
}

/** The claims of a valid token, or why it is refused (101 missing or invalid, 109 expired). */
export function verifyToken(token: unknown, secret: string): Claims | Refusal {
  const invalid = { code: UNAUTHORIZED, message: "unauthorized" };
  if (typeof token !== "string") return invalid;
  const [header, payload, signature, extra] = token.split(".");
  if (header === undefined || payload === undefined || signature === undefined || extra) {
    return invalid;
  }
  const expected = createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return invalid;
  let claims: Partial<Claims>;
  try {
    const decoded = JSON.parse(Buffer.from(header, "base64url").toString()) as { alg?: string };
    if (decoded.alg !== "HS256") return invalid;
    claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Partial<Claims>;
  } catch {
    return invalid;
  }
  if (typeof claims.sub !== "string" || typeof claims.exp !== "number") return invalid;
  if (claims.exp <= Date.now() / 1000) return { code: TOKEN_EXPIRED, message: "token expired" };
  return {
    sub: claims.sub,
    exp: claims.exp,
    orgs: claims.orgs ?? [],
    channels: claims.channels ?? [],
    info: claims.info ?? null,
  };
}

const SEGMENT = /^[A-Za-z0-9_@=+-]{1,64}$/;

/**
 * Why `claims` may not subscribe to `channel` under Herald's default namespaces (null when it
 * may): `public:*` anyone, `user:<sub>` that user, `org:<org>` its members, `org:<org>:…`
 * members whose `channels` claim matches (a `*` as the whole last segment matches the rest).
 */
export function subscribeRefusal(claims: Claims, channel: string): Refusal | null {
  const unknown = { code: UNKNOWN_CHANNEL, message: "unknown channel" };
  const denied = { code: PERMISSION_DENIED, message: "permission denied" };
  const segments = channel.split(":");
  if (channel.length > 200 || !segments.every((segment) => SEGMENT.test(segment))) return unknown;
  const [namespace, owner] = segments;
  switch (namespace) {
    case "public":
      return segments.length > 1 ? null : unknown;
    case "user":
      return segments.length === 2 && owner === claims.sub ? null : denied;
    case "org": {
      if (owner === undefined || !claims.orgs.includes(owner)) return denied;
      const granted =
        segments.length === 2 || claims.channels.some((grant) => grants(grant, channel));
      return granted ? null : denied;
    }
    default:
      return unknown;
  }
}

function grants(grant: string, channel: string): boolean {
  if (grant.endsWith(":*")) return channel.startsWith(grant.slice(0, -1));
  return grant === channel;
}
