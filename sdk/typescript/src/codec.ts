/**
 * The binary subprotocol `herald.v1.proto`: the same commands, replies and pushes as JSON,
 * as protobuf (`proto/herald/v1/client.proto`, generated into `gen/` by protoc-gen-es). A
 * binary frame holds one or more messages, each prefixed with its length as a varint. JSON
 * values (publication data, a token's `info`) travel as their JSON text in `bytes` fields;
 * fields at their default value mean absent, as the JSON form omits them.
 *
 * The rest of the SDK speaks the JSON shapes: this module turns a JSON command line into a
 * binary frame, and a binary frame into the {@link ServerMessage}s the JSON frame would be.
 * The client imports it dynamically, only for `protocol: "protobuf"`, so that it and the
 * protobuf runtime stay out of the bundles of applications that speak JSON.
 *
 * @packageDocumentation
 */

import { create, fromBinary } from "@bufbuild/protobuf";
import { sizeDelimitedEncode, sizeDelimitedPeek } from "@bufbuild/protobuf/wire";

import {
  CommandSchema,
  ConnectRequestSchema,
  HistoryRequestSchema,
  PingRequestSchema,
  PresenceRequestSchema,
  PresenceStatsRequestSchema,
  PublishRequestSchema,
  RefreshRequestSchema,
  ReplySchema,
  RpcRequestSchema,
  SetPresenceStateRequestSchema,
  SetStatusRequestSchema,
  StreamPositionSchema,
  SubRefreshRequestSchema,
  SubscribeRequestSchema,
  TypingRequestSchema,
  UnsubscribeRequestSchema,
  type Command,
  type Publication,
  type PresenceMember,
  type Push,
  type Reply,
  type Result,
  type StatePush,
  type SubscribeResult,
  type TypingPush,
} from "./gen/herald/v1/client_pb.js";
import type {
  ServerMessage,
  StreamPosition,
  SubscribeResult as WireSubscribeResult,
  WirePresenceMember,
  WirePresenceState,
  WirePublication,
  WirePush,
  WireStatus,
  WireTyper,
} from "./protocol.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Params of any command, as the JSON form has them. */
type Params = Record<string, unknown>;

function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function int(value: unknown): bigint {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0
    ? BigInt(value)
    : 0n;
}

/** The method oneof of a command from its JSON method name and params. */
function method(name: string, p: Params): Command["method"] {
  const channel = str(p.channel);
  switch (name) {
    case "connect": {
      const subs = (p.subs ?? {}) as Record<string, Partial<StreamPosition>>;
      return {
        case: name,
        value: create(ConnectRequestSchema, {
          token: str(p.token),
          name: str(p.name),
          version: str(p.version),
          subs: Object.fromEntries(
            Object.entries(subs).map(([channel, position]) => [channel, streamPosition(position)]),
          ),
        }),
      };
    }
    case "subscribe": {
      const recover = p.recover as Partial<StreamPosition> | undefined;
      return {
        case: name,
        value: create(SubscribeRequestSchema, {
          channel,
          token: str(p.token),
          recover: recover ? streamPosition(recover) : undefined,
        }),
      };
    }
    case "unsubscribe":
      return { case: name, value: create(UnsubscribeRequestSchema, { channel }) };
    case "publish":
      return {
        case: name,
        value: create(PublishRequestSchema, {
          channel,
          event: str(p.event),
          data: encoder.encode(JSON.stringify(p.data ?? null)),
          idempotencyKey: str(p.idempotencyKey),
        }),
      };
    case "rpc":
      return {
        case: name,
        value: create(RpcRequestSchema, {
          method: str(p.method),
          data: encoder.encode(JSON.stringify(p.data ?? null)),
        }),
      };
    case "history":
      return {
        case: name,
        value: create(HistoryRequestSchema, {
          channel,
          limit: typeof p.limit === "number" ? p.limit : undefined,
          sinceOffset: typeof p.sinceOffset === "number" ? int(p.sinceOffset) : undefined,
        }),
      };
    case "refresh":
      return { case: name, value: create(RefreshRequestSchema, { token: str(p.token) }) };
    case "ping":
      return { case: name, value: create(PingRequestSchema) };
    case "subRefresh":
      return {
        case: name,
        value: create(SubRefreshRequestSchema, { channel, token: str(p.token) }),
      };
    case "presence":
      return {
        case: name,
        value: create(PresenceRequestSchema, { channel, cursor: str(p.cursor) }),
      };
    case "presenceStats":
      return { case: name, value: create(PresenceStatsRequestSchema, { channel }) };
    case "setStatus":
      return { case: name, value: create(SetStatusRequestSchema, { status: str(p.status) }) };
    case "typing":
      return {
        case: name,
        value: create(TypingRequestSchema, { channel, active: p.active === true }),
      };
    case "setPresenceState":
      return {
        case: name,
        value: create(SetPresenceStateRequestSchema, {
          channel,
          // Empty clears it, as `null` does in JSON.
          state:
            p.state === null || p.state === undefined
              ? new Uint8Array()
              : encoder.encode(JSON.stringify(p.state)),
        }),
      };
    default:
      throw new TypeError(`herald: no binary form for method ${JSON.stringify(name)}`);
  }
}

function streamPosition(position: Partial<StreamPosition>) {
  return create(StreamPositionSchema, {
    offset: int(position.offset),
    epoch: str(position.epoch),
  });
}

/** One or more newline-separated JSON commands as one binary frame. */
export function encodeBinaryCommands(text: string): Uint8Array {
  const frames: Uint8Array[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const { id, ...rest } = JSON.parse(line) as { id: number } & Params;
    const [name, params] = Object.entries(rest)[0] ?? ["", {}];
    const command = create(CommandSchema, {
      id: int(id),
      method: method(name, (params ?? {}) as Params),
    });
    frames.push(sizeDelimitedEncode(CommandSchema, command));
  }
  const frame = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    frame.set(f, at);
    at += f.length;
  }
  return frame;
}

/**
 * Decodes a binary server frame. A message that does not decode is reported through
 * `onInvalid` and ends the frame: what follows it cannot be found.
 */
export function decodeBinaryFrame(
  frame: Uint8Array,
  onInvalid?: (error: unknown) => void,
): ServerMessage[] {
  const messages: ServerMessage[] = [];
  let rest = frame;
  while (rest.length > 0) {
    try {
      const peek = sizeDelimitedPeek(rest);
      if (peek.eof || peek.offset + peek.size > rest.length) {
        throw new RangeError("a message runs past the end of the frame");
      }
      const end = peek.offset + peek.size;
      messages.push(serverMessage(fromBinary(ReplySchema, rest.subarray(peek.offset, end))));
      rest = rest.subarray(end);
    } catch (error) {
      onInvalid?.(error);
      break;
    }
  }
  return messages;
}

function json(bytes: Uint8Array): unknown {
  return JSON.parse(decoder.decode(bytes));
}

function optionalJson(bytes: Uint8Array): unknown {
  return bytes.length === 0 ? undefined : json(bytes);
}

/** A user status from its text; the proto carries the gateway's `Status` as a string. */
function userStatus(text: string): WireStatus["status"] | undefined {
  return text === "online" || text === "away" || text === "busy" || text === "offline"
    ? text
    : undefined;
}

function publication(p: Publication): WirePublication {
  const out: WirePublication = { event: p.event, data: json(p.data), ts: Number(p.ts) };
  if (p.offset !== 0n) out.offset = Number(p.offset);
  if (p.epoch !== "") out.epoch = p.epoch;
  if (p.from !== "") out.from = p.from;
  return out;
}

function member(m: PresenceMember): WirePresenceMember {
  const out: WirePresenceMember = { user: m.user, client: m.client, joinedAt: Number(m.joinedAt) };
  const info = optionalJson(m.info);
  if (info !== undefined) out.info = info;
  const status = userStatus(m.status);
  if (status !== undefined) out.status = status;
  if (m.state.length > 0) out.state = json(m.state);
  return out;
}

function presenceState(s: StatePush): WirePresenceState {
  return { user: s.user, client: s.client, state: s.state.length === 0 ? null : json(s.state) };
}

function typer(t: TypingPush): WireTyper {
  const out: WireTyper = { user: t.user, active: t.active };
  const info = optionalJson(t.info);
  if (info !== undefined) out.info = info;
  return out;
}

function result(r: Result): unknown {
  const { case: kind, value } = r.result;
  switch (kind) {
    case undefined:
      return {};
    case "connect":
      return { ...plain(value), expires: Number(value.expires) };
    case "subscribe":
      return subscribeResult(value);
    case "publish":
      return { offset: Number(value.offset), epoch: value.epoch };
    case "history":
      return {
        publications: value.publications.map(publication),
        offset: Number(value.offset),
        epoch: value.epoch,
        ...(value.more ? { more: true } : {}),
      };
    case "refresh":
      return { expires: Number(value.expires) };
    case "ping":
      return { ts: Number(value.ts) };
    case "presence":
      return {
        members: value.members.map(member),
        ...(value.more ? { more: true, cursor: value.cursor } : {}),
      };
    case "presenceStats":
      return { users: Number(value.users), clients: Number(value.clients) };
    case "rpc":
      // Empty: the backend returned no data.
      return { data: value.data.length === 0 ? null : json(value.data) };
  }
}

/** A subscribe result, the reply's or the `subscribe` push's. */
function subscribeResult(value: SubscribeResult): WireSubscribeResult {
  return {
    offset: Number(value.offset),
    epoch: value.epoch,
    recoverable: value.recoverable,
    recovered: value.recovered,
    publications: value.publications.map(publication),
    ...(value.more ? { more: true } : {}),
    ...(value.typing.length > 0 ? { typing: value.typing.map(typer) } : {}),
    ...(value.expires !== undefined ? { expires: Number(value.expires) } : {}),
  };
}

/** A generated message's fields without its `$typeName`. */
function plain<T extends { $typeName: string }>(message: T): Omit<T, "$typeName"> {
  const { $typeName: _, ...fields } = message;
  return fields;
}

function push(p: Push): WirePush {
  const out: WirePush = {};
  if (p.channel !== "") out.channel = p.channel;
  const { case: kind, value } = p.kind;
  switch (kind) {
    case "pub":
      out.pub = publication(value);
      break;
    case "unsubscribe":
      out.unsubscribe = plain(value);
      break;
    case "disconnect":
      out.disconnect = plain(value);
      break;
    case "join":
      out.join = member(value);
      break;
    case "leave":
      out.leave = member(value);
      break;
    case "presence":
      out.presence = {
        ...(value.joins.length > 0 ? { joins: value.joins.map(member) } : {}),
        ...(value.leaves.length > 0 ? { leaves: value.leaves.map(member) } : {}),
        ...(value.states.length > 0 ? { states: value.states.map(presenceState) } : {}),
      };
      break;
    case "state":
      out.state = presenceState(value);
      break;
    case "typing":
      out.typing = typer(value);
      break;
    case "status": {
      const status = userStatus(value.status);
      if (status === undefined) break;
      out.status = {
        user: value.user,
        status,
        ...(value.lastSeen !== 0n ? { lastSeen: Number(value.lastSeen) } : {}),
      };
      break;
    }
    case "subscribe":
      out.subscribe = subscribeResult(value);
      break;
  }
  return out;
}

function serverMessage(reply: Reply): ServerMessage {
  const { case: kind, value } = reply.kind;
  switch (kind) {
    case "result":
      return { id: Number(reply.id), result: result(value) };
    case "error":
      return { id: Number(reply.id), error: plain(value) };
    case "push":
      return { push: push(value) };
    default:
      return {};
  }
}
