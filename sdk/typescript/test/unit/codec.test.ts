import { create, fromBinary } from "@bufbuild/protobuf";
import { sizeDelimitedEncode, sizeDelimitedPeek } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { decodeBinaryFrame, encodeBinaryCommands } from "../../src/codec.js";
import { CommandSchema, ReplySchema, type Command } from "../../src/gen/herald/v1/client_pb.js";
import { encodeCommand } from "../../src/protocol.js";

function commands(frame: Uint8Array): Command[] {
  const out: Command[] = [];
  let rest = frame;
  while (rest.length > 0) {
    const peek = sizeDelimitedPeek(rest);
    if (peek.eof) throw new Error("truncated");
    out.push(fromBinary(CommandSchema, rest.subarray(peek.offset, peek.offset + peek.size)));
    rest = rest.subarray(peek.offset + peek.size);
  }
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

describe("the binary codec", () => {
  it("turns JSON command lines into length-delimited Commands", () => {
    const text = [
      encodeCommand(1, "subscribe", { channel: "a:b", recover: { offset: 7, epoch: "e" } }),
      encodeCommand(2, "publish", {
        channel: "a:b",
        event: "x",
        data: { n: [1, "é"] },
        idempotencyKey: "k1",
      }),
      encodeCommand(3, "history", { channel: "a:b", limit: 0, sinceOffset: 2 }),
      encodeCommand(4, "typing", { channel: "a:b", active: true }),
    ].join("\n");
    const [subscribe, publish, history, typing] = commands(encodeBinaryCommands(text));
    expect(subscribe?.id).toBe(1n);
    expect(subscribe?.method).toMatchObject({
      case: "subscribe",
      value: { channel: "a:b", recover: { offset: 7n, epoch: "e" } },
    });
    const data = publish?.method.case === "publish" ? publish.method.value.data : undefined;
    expect(JSON.parse(new TextDecoder().decode(data))).toEqual({ n: [1, "é"] });
    expect(publish?.method).toMatchObject({ value: { idempotencyKey: "k1" } });
    expect(history?.method).toMatchObject({ value: { limit: 0, sinceOffset: 2n } });
    expect(typing?.method).toMatchObject({ case: "typing", value: { active: true } });
    expect(() => encodeBinaryCommands(encodeCommand(5, "dance", {}))).toThrow(TypeError);
  });

  it("decodes replies and pushes into the JSON shapes", () => {
    const reply = (init: Parameters<typeof create<typeof ReplySchema>>[1]) =>
      sizeDelimitedEncode(ReplySchema, create(ReplySchema, init));
    const frame = concat(
      reply({
        id: 3n,
        kind: { case: "result", value: { result: { case: "ping", value: { ts: 9n } } } },
      }),
      reply({ id: 4n, kind: { case: "result", value: {} } }),
      reply({
        id: 5n,
        kind: { case: "error", value: { code: 103, message: "permission denied" } },
      }),
      reply({
        kind: {
          case: "push",
          value: {
            channel: "a:b",
            kind: {
              case: "pub",
              value: {
                event: "e",
                data: new TextEncoder().encode('{"x":1}'),
                offset: 6n,
                epoch: "ep",
                ts: 1700000000000n,
              },
            },
          },
        },
      }),
      reply({
        kind: {
          case: "push",
          value: {
            channel: "org:acme:ch:x",
            kind: { case: "join", value: { user: "bob", client: "c1", joinedAt: 5n } },
          },
        },
      }),
      reply({
        kind: {
          case: "push",
          value: {
            channel: "org:acme:ch:x",
            kind: {
              case: "presence",
              value: { joins: [], leaves: [{ user: "eve", client: "c9", joinedAt: 7n }] },
            },
          },
        },
      }),
    );
    expect(decodeBinaryFrame(frame)).toEqual([
      { id: 3, result: { ts: 9 } },
      { id: 4, result: {} },
      { id: 5, error: { code: 103, message: "permission denied", temporary: false } },
      {
        push: {
          channel: "a:b",
          pub: { event: "e", data: { x: 1 }, offset: 6, epoch: "ep", ts: 1700000000000 },
        },
      },
      { push: { channel: "org:acme:ch:x", join: { user: "bob", client: "c1", joinedAt: 5 } } },
      {
        push: {
          channel: "org:acme:ch:x",
          presence: { leaves: [{ user: "eve", client: "c9", joinedAt: 7 }] },
        },
      },
    ]);
    const invalid: unknown[] = [];
    const truncated = decodeBinaryFrame(frame.subarray(0, frame.length - 1), (e) =>
      invalid.push(e),
    );
    expect(truncated).toHaveLength(5);
    expect(invalid).toHaveLength(1);
  });

  it("decodes user statuses as the gateway's four values, dropping any other text", () => {
    const push = (kind: Parameters<typeof create<typeof ReplySchema>>[1]) =>
      sizeDelimitedEncode(ReplySchema, create(ReplySchema, kind));
    const frame = concat(
      push({
        kind: {
          case: "push",
          value: {
            channel: "org:acme",
            kind: { case: "status", value: { user: "bob", status: "away" } },
          },
        },
      }),
      push({
        kind: {
          case: "push",
          value: {
            channel: "org:acme",
            kind: { case: "status", value: { user: "bob", status: "dancing", lastSeen: 5n } },
          },
        },
      }),
      push({
        kind: {
          case: "push",
          value: {
            channel: "org:acme:ch:x",
            kind: {
              case: "join",
              value: { user: "eve", client: "c2", status: "busy", joinedAt: 1n },
            },
          },
        },
      }),
      push({
        kind: {
          case: "push",
          value: {
            channel: "org:acme:ch:x",
            kind: { case: "join", value: { user: "eve", client: "c3", status: "?", joinedAt: 2n } },
          },
        },
      }),
    );
    expect(decodeBinaryFrame(frame)).toEqual([
      { push: { channel: "org:acme", status: { user: "bob", status: "away" } } },
      { push: { channel: "org:acme" } },
      {
        push: {
          channel: "org:acme:ch:x",
          join: { user: "eve", client: "c2", status: "busy", joinedAt: 1 },
        },
      },
      { push: { channel: "org:acme:ch:x", join: { user: "eve", client: "c3", joinedAt: 2 } } },
    ]);
  });

  it("carries presence state: the command, members' states, state pushes and diffs", () => {
    const text = [
      encodeCommand(1, "setPresenceState", { channel: "a:b", state: { cell: "B3" } }),
      encodeCommand(2, "setPresenceState", { channel: "a:b", state: null }),
    ].join("\n");
    const [set, clear] = commands(encodeBinaryCommands(text));
    const state = (command: Command | undefined) =>
      command?.method.case === "setPresenceState" ? command.method.value.state : undefined;
    expect(JSON.parse(new TextDecoder().decode(state(set)))).toEqual({ cell: "B3" });
    expect(state(clear)).toHaveLength(0);

    const bytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    const push = (kind: any) =>
      sizeDelimitedEncode(
        ReplySchema,
        create(ReplySchema, { kind: { case: "push", value: { channel: "a:b", kind } } }),
      );
    const frame = concat(
      push({
        case: "join",
        value: { user: "ann", client: "c1", joinedAt: 1n, state: bytes(7) },
      }),
      push({ case: "state", value: { user: "ann", client: "c1", state: bytes({ x: 1 }) } }),
      push({ case: "state", value: { user: "ann", client: "c1" } }),
      push({
        case: "presence",
        value: { states: [{ user: "bob", client: "c2", state: bytes("here") }] },
      }),
    );
    expect(decodeBinaryFrame(frame).map((m) => m.push)).toEqual([
      { channel: "a:b", join: { user: "ann", client: "c1", joinedAt: 1, state: 7 } },
      { channel: "a:b", state: { user: "ann", client: "c1", state: { x: 1 } } },
      { channel: "a:b", state: { user: "ann", client: "c1", state: null } },
      { channel: "a:b", presence: { states: [{ user: "bob", client: "c2", state: "here" }] } },
    ]);
  });

  it("carries rpc, connect's server-side positions and the subscribe push", () => {
    const text = [
      encodeCommand(1, "connect", {
        token: "t",
        name: "n",
        version: "v",
        subs: {
          "org:acme:ch:x": { offset: 12, epoch: "e" },
          "org:acme:ch:y": { offset: 0, epoch: "" },
        },
      }),
      encodeCommand(2, "rpc", { method: "message:send", data: { text: "hi" } }),
      encodeCommand(3, "rpc", { method: "ping:me" }),
    ].join("\n");
    const [connect, rpc, bare] = commands(encodeBinaryCommands(text));
    expect(connect?.method).toMatchObject({
      case: "connect",
      value: {
        subs: {
          "org:acme:ch:x": { offset: 12n, epoch: "e" },
          "org:acme:ch:y": { offset: 0n, epoch: "" },
        },
      },
    });
    const decode = (command: Command | undefined) =>
      command?.method.case === "rpc"
        ? [
            command.method.value.method,
            JSON.parse(new TextDecoder().decode(command.method.value.data)),
          ]
        : undefined;
    expect(decode(rpc)).toEqual(["message:send", { text: "hi" }]);
    expect(decode(bare)).toEqual(["ping:me", null]);

    const reply = (init: Parameters<typeof create<typeof ReplySchema>>[1]) =>
      sizeDelimitedEncode(ReplySchema, create(ReplySchema, init));
    const rpcResult = (data: string) =>
      reply({
        id: 2n,
        kind: {
          case: "result",
          value: { result: { case: "rpc", value: { data: new TextEncoder().encode(data) } } },
        },
      });
    const frame = concat(
      rpcResult('{"offset":7}'),
      rpcResult(""),
      reply({
        kind: {
          case: "push",
          value: {
            channel: "org:acme:ch:x",
            kind: {
              case: "subscribe",
              value: {
                offset: 13n,
                epoch: "e",
                recoverable: true,
                recovered: true,
                publications: [
                  {
                    event: "m",
                    data: new TextEncoder().encode("1"),
                    offset: 13n,
                    epoch: "e",
                    ts: 5n,
                  },
                ],
              },
            },
          },
        },
      }),
    );
    expect(decodeBinaryFrame(frame)).toEqual([
      { id: 2, result: { data: { offset: 7 } } },
      { id: 2, result: { data: null } },
      {
        push: {
          channel: "org:acme:ch:x",
          subscribe: {
            offset: 13,
            epoch: "e",
            recoverable: true,
            recovered: true,
            publications: [{ event: "m", data: 1, offset: 13, epoch: "e", ts: 5 }],
          },
        },
      },
    ]);
  });
});
