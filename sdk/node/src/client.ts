/**
 * `HeraldServer`: a client of Herald's gRPC API (`herald.v1.Herald`, proto/herald/v1/api.proto)
 * for the app's backend services. JSON data in and out, the API key on every call, a deadline
 * on every attempt, and retries of UNAVAILABLE and DEADLINE_EXCEEDED with backoff and jitter.
 */
import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import { HeraldError } from "./errors.js";
import { decodeJson, encodeJson } from "./json.js";
import { heraldMethod } from "./proto.js";
import { retryPolicy, withRetries, type RetryOptions, type RetryPolicy } from "./retry.js";
import type {
  BroadcastResponse,
  DisconnectResponse,
  HistoryResponse,
  InfoResponse,
  PresenceResponse,
  PresenceStatsResponse,
  Publication,
  PublishResponse,
  UserStatusResponse,
} from "./types.js";

export interface TlsOptions {
  /** PEM of the CA(s) to trust; default Node's root certificates. */
  rootCerts?: Buffer;
  /** PEM of this client's key and certificate, for mTLS. */
  privateKey?: Buffer;
  certChain?: Buffer;
}

export interface HeraldServerOptions {
  /** The gateway's gRPC address (`HERALD_GRPC_ADDR`): `host:port`, `http://host:port`, or `https://host:port` (TLS). */
  address: string;
  /** One of the gateway's `HERALD_API_KEYS`, sent as `authorization: Bearer <key>`. */
  apiKey: string;
  /** TLS to the gateway (`true` with the default roots, or the certificates); default off unless `address` is https://. */
  tls?: boolean | TlsOptions;
  /** The deadline of each attempt. Default 10,000 ms. */
  deadlineMs?: number;
  /** Retries of UNAVAILABLE and DEADLINE_EXCEEDED: a count, or the count and backoff. Default 3 retries, 100 ms doubling to 2 s, with jitter. */
  retries?: number | RetryOptions;
  /** Passed to @grpc/grpc-js's channel (keepalive, message sizes…). */
  channelOptions?: grpc.ChannelOptions;
}

/** Options every method takes. */
export interface CallOptions {
  /** This call's deadline per attempt, instead of the client's `deadlineMs`. */
  deadlineMs?: number;
}

export interface PublishOptions extends CallOptions {
  /**
   * The same key on the same channel within 5 minutes publishes once and answers the first
   * result. Default: a new random key for this call, so its own retries never publish twice.
   * Pass your own (a message id) to make retries of your own safe as well.
   */
  idempotencyKey?: string;
}

export interface HistoryOptions extends CallOptions {
  /** Publications with an offset above this (default 0: from the oldest retained). */
  sinceOffset?: number;
  /** At most this many a page (default 0: the channel's history size). */
  limit?: number;
}

export interface DisconnectOptions extends CallOptions {
  /** A close code from 4000–4299; default 4200 (reconnect now). */
  code?: number;
  /** The close reason the connections get. */
  reason?: string;
}

export interface SubscriptionOptions extends CallOptions {
  /** One connection id (from its connect result) instead of every connection of the user. */
  client?: string;
}

interface RawPublication {
  offset: number;
  event: string;
  data: Buffer;
  ts: number;
  from: string;
}

interface RawHistoryResponse {
  publications: RawPublication[];
  offset: number;
  epoch: string;
  more: boolean;
}

interface RawPresenceMember {
  user: string;
  client: string;
  info: Buffer;
  joinedAt: number;
  status: string;
  state: Buffer;
}

const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

export class HeraldServer {
  private readonly client: grpc.Client;
  private readonly authorization: string;
  private readonly deadlineMs: number;
  private readonly retry: RetryPolicy;

  constructor(options: HeraldServerOptions) {
    const { target, tls } = parseAddress(options.address);
    this.client = new grpc.Client(
      target,
      credentials(options.tls ?? tls),
      options.channelOptions ?? {},
    );
    this.authorization = `Bearer ${options.apiKey}`;
    this.deadlineMs = options.deadlineMs ?? 10_000;
    this.retry = retryPolicy(options.retries);
  }

  /** Publishes one event to one channel; resolves once it is stored and fanned out. */
  async publish(
    channel: string,
    event: string,
    data: unknown,
    options: PublishOptions = {},
  ): Promise<PublishResponse> {
    const request = {
      channel,
      event,
      data: encodeJson(data, "data"),
      idempotencyKey: options.idempotencyKey ?? randomUUID(),
    };
    return this.call("Publish", request, options);
  }

  /** The same event to up to 1,000 channels; results in the order of `channels`. */
  async broadcast(
    channels: readonly string[],
    event: string,
    data: unknown,
    options: PublishOptions = {},
  ): Promise<BroadcastResponse> {
    const request = {
      channels,
      event,
      data: encodeJson(data, "data"),
      idempotencyKey: options.idempotencyKey ?? randomUUID(),
    };
    return this.call("Broadcast", request, options);
  }

  /** One page of a channel's retained history, oldest first; `more` says another page follows. */
  async history<T = unknown>(
    channel: string,
    options: HistoryOptions = {},
  ): Promise<HistoryResponse<T>> {
    const request = { channel, sinceOffset: options.sinceOffset ?? 0, limit: options.limit ?? 0 };
    const page = await this.call<RawHistoryResponse>("History", request, options);
    return { ...page, publications: page.publications.map((p) => publication<T>(p)) };
  }

  /**
   * Every retained publication after `sinceOffset`, oldest first, reading page after page
   * (`limit` a page) while `more` says there are more. Throws a HeraldError (ABORTED) when the
   * channel's history restarted (a new epoch) between two pages.
   */
  async *iterateHistory<T = unknown>(
    channel: string,
    options: HistoryOptions = {},
  ): AsyncGenerator<Publication<T>, void, undefined> {
    let sinceOffset = options.sinceOffset ?? 0;
    let epoch: string | undefined;
    for (;;) {
      const page = await this.history<T>(channel, { ...options, sinceOffset });
      if (epoch !== undefined && page.epoch !== epoch) {
        throw new HeraldError(
          "History",
          grpc.status.ABORTED,
          `the history of ${channel} restarted (epoch ${epoch} → ${page.epoch}) while paging`,
        );
      }
      epoch = page.epoch;
      yield* page.publications;
      const last = page.publications.at(-1);
      // A page with `more` has at least one publication; the check keeps a bad answer from looping.
      if (!page.more || !last) return;
      sinceOffset = last.offset;
    }
  }

  /** The members of a channel's presence, one per connection. */
  async presence<I = unknown>(
    channel: string,
    options: CallOptions = {},
  ): Promise<PresenceResponse<I>> {
    const response = await this.call<{ members: RawPresenceMember[] }>(
      "Presence",
      { channel },
      options,
    );
    return {
      ...response,
      members: response.members.map((member) => ({
        ...member,
        info: decodeJson<I>(member.info),
        state: decodeJson(member.state),
      })),
    };
  }

  /** How many distinct users and connections a channel's presence holds. */
  async presenceStats(channel: string, options: CallOptions = {}): Promise<PresenceStatsResponse> {
    return this.call("PresenceStats", { channel }, options);
  }

  /** Each user's status in `org`, in the order asked (at most 1,000 users). */
  async userStatus(
    org: string,
    users: readonly string[],
    options: CallOptions = {},
  ): Promise<UserStatusResponse> {
    return this.call("UserStatus", { org, users }, options);
  }

  /**
   * Closes every connection of `user` on the node this client reaches. A retried call may
   * find fewer connections than the first attempt closed: the count is the answering attempt's.
   */
  async disconnect(user: string, options: DisconnectOptions = {}): Promise<DisconnectResponse> {
    const request = { user, code: options.code ?? 0, reason: options.reason ?? "" };
    return this.call("Disconnect", request, options);
  }

  /** The node's (or nodes') id, version, connections, subscriptions and uptime. */
  async info(options: CallOptions = {}): Promise<InfoResponse> {
    return this.call("Info", {}, options);
  }

  /**
   * Subscribes every connection of `user`, on every node, to `channel` (kept for the user and
   * restored on reconnects), or only the connection `client`: a server-side subscription.
   */
  async subscribe(user: string, channel: string, options: SubscriptionOptions = {}): Promise<void> {
    await this.call("Subscribe", { user, channel, client: options.client ?? "" }, options);
  }

  /** Ends a server-side subscription of `user` (or of the connection `client`). */
  async unsubscribe(
    user: string,
    channel: string,
    options: SubscriptionOptions = {},
  ): Promise<void> {
    await this.call("Unsubscribe", { user, channel, client: options.client ?? "" }, options);
  }

  /** Closes the connection to the gateway; calls after this fail. */
  close(): void {
    this.client.close();
  }

  private call<Res>(method: string, request: object, options: CallOptions): Promise<Res> {
    const definition = heraldMethod<object, Res>(method);
    const deadlineMs = options.deadlineMs ?? this.deadlineMs;
    const attempt = () =>
      new Promise<Res>((resolve, reject) => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", this.authorization);
        this.client.makeUnaryRequest(
          definition.path,
          definition.requestSerialize,
          definition.responseDeserialize,
          request,
          metadata,
          { deadline: Date.now() + deadlineMs },
          (error, response) => {
            if (error) reject(HeraldError.from(method, error));
            else resolve(response as Res);
          },
        );
      });
    return withRetries(
      attempt,
      (error) => error instanceof HeraldError && RETRYABLE.has(error.code),
      this.retry,
    );
  }
}

function publication<T>(raw: RawPublication): Publication<T> {
  return { ...raw, data: decodeJson<T>(raw.data) };
}

function parseAddress(address: string): { target: string; tls: boolean } {
  const match = /^(https?):\/\/(.+?)\/?$/.exec(address);
  if (!match) return { target: address, tls: false };
  return { target: match[2] as string, tls: match[1] === "https" };
}

function credentials(tls: boolean | TlsOptions): grpc.ChannelCredentials {
  if (tls === false) return grpc.credentials.createInsecure();
  const { rootCerts, privateKey, certChain } = tls === true ? {} : tls;
  return grpc.credentials.createSsl(rootCerts ?? null, privateKey ?? null, certChain ?? null);
}
