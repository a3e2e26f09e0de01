import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { HeraldError } from "../../src/index.js";
import { backoffDelay, DEFAULT_RETRY } from "../../src/retry.js";
import { fakeHerald } from "../helpers/fake-herald.js";

const position = { response: { offset: 7, epoch: "E1" } };

describe("retries", () => {
  it("retries UNAVAILABLE with the same generated idempotency key, so a retry cannot publish twice", async () => {
    const fake = await fakeHerald((_, attempt) =>
      attempt < 2 ? { error: status.UNAVAILABLE } : position,
    );
    const result = await fake.client().publish("org:acme:ch:a", "m", { text: "hi" });
    expect(result).toEqual({ offset: 7, epoch: "E1" });
    expect(fake.calls).toHaveLength(3);
    const keys = new Set(fake.calls.map((call) => call.request["idempotencyKey"]));
    expect(keys.size).toBe(1);
    expect([...keys][0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse((fake.calls[0]?.request["data"] as Buffer).toString())).toEqual({
      text: "hi",
    });
  });

  it("generates a new key for each publish call and keeps the caller's own", async () => {
    const fake = await fakeHerald(() => position);
    const client = fake.client();
    await client.publish("org:acme:ch:a", "m", 1);
    await client.publish("org:acme:ch:a", "m", 1);
    await client.broadcast(["org:acme:ch:a", "org:acme:ch:b"], "m", 1, { idempotencyKey: "m-42" });
    const keys = fake.calls.map((call) => call.request["idempotencyKey"]);
    expect(keys[0]).not.toEqual(keys[1]);
    expect(keys[2]).toBe("m-42");
  });

  it("retries DEADLINE_EXCEEDED: each attempt has the deadline", async () => {
    const fake = await fakeHerald((_, attempt) =>
      attempt === 0 ? "hang" : { response: { nodes: [] } },
    );
    const started = Date.now();
    await expect(fake.client({ deadlineMs: 200 }).info()).resolves.toEqual({ nodes: [] });
    expect(fake.calls).toHaveLength(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
  });

  it("gives up after the configured retries with the last HeraldError", async () => {
    const fake = await fakeHerald(() => ({ error: status.UNAVAILABLE, details: "redis down" }));
    const error = await fake
      .client({ retries: { retries: 2, initialDelayMs: 1 } })
      .presenceStats("org:acme:ch:a")
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({
      code: status.UNAVAILABLE,
      codeName: "UNAVAILABLE",
      method: "PresenceStats",
      details: "redis down",
    });
    expect(fake.calls).toHaveLength(3);
  });

  it("does not retry other errors", async () => {
    const fake = await fakeHerald(() => ({
      error: status.INVALID_ARGUMENT,
      details: "channel nope:x is not in a configured namespace",
    }));
    const error = await fake
      .client()
      .publish("nope:x", "m", {})
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect((error as HeraldError).message).toBe(
      "Herald Publish failed: INVALID_ARGUMENT: channel nope:x is not in a configured namespace",
    );
    expect(fake.calls).toHaveLength(1);
  });

  it("backs off exponentially up to the ceiling, with jitter in the upper half", () => {
    const policy = { ...DEFAULT_RETRY, initialDelayMs: 100, maxDelayMs: 1_000 };
    expect(backoffDelay(0, policy, () => 0)).toBe(50);
    expect(backoffDelay(0, policy, () => 1)).toBe(100);
    expect(backoffDelay(2, policy, () => 0.5)).toBe(300);
    expect(backoffDelay(10, policy, () => 1)).toBe(1_000);
    expect(backoffDelay(10, policy, () => 0)).toBe(500);
  });
});

describe("calls", () => {
  it("sends the API key as a bearer token on every call", async () => {
    const fake = await fakeHerald(() => ({ response: {} }));
    const client = fake.client({ apiKey: "k-1" });
    await client.subscribe("alice", "org:acme:room:1", { client: "c1" });
    await client.unsubscribe("alice", "org:acme:room:1");
    expect(fake.calls.map((call) => call.authorization)).toEqual(["Bearer k-1", "Bearer k-1"]);
    expect(fake.calls.map((call) => call.request)).toEqual([
      { user: "alice", channel: "org:acme:room:1", client: "c1" },
      { user: "alice", channel: "org:acme:room:1", client: "" },
    ]);
  });

  it("refuses data JSON cannot hold before calling", async () => {
    const fake = await fakeHerald(() => position);
    await expect(fake.client().publish("org:acme:ch:a", "m", undefined)).rejects.toThrow(TypeError);
    expect(fake.calls).toHaveLength(0);
  });

  it("parses JSON data in history and presence", async () => {
    const fake = await fakeHerald((call) =>
      call.method === "History"
        ? {
            response: {
              publications: [
                { offset: 1, event: "m", data: Buffer.from('{"a":1}'), ts: 5, from: "" },
              ],
              offset: 1,
              epoch: "E",
              more: false,
            },
          }
        : {
            response: {
              members: [
                { user: "u", client: "c", info: Buffer.alloc(0), joinedAt: 9, status: "" },
                {
                  user: "v",
                  client: "d",
                  info: Buffer.from('{"name":"V"}'),
                  joinedAt: 10,
                  state: Buffer.from('{"cell":"B3"}'),
                },
              ],
            },
          },
    );
    const client = fake.client();
    expect(await client.history("org:acme:ch:a")).toEqual({
      publications: [{ offset: 1, event: "m", data: { a: 1 }, ts: 5, from: "" }],
      offset: 1,
      epoch: "E",
      more: false,
    });
    const { members } = await client.presence("org:acme:ch:a");
    expect(members.map((member) => member.info)).toEqual([null, { name: "V" }]);
    expect(members.map((member) => member.state)).toEqual([null, { cell: "B3" }]);
  });

  it("iterateHistory follows `more` from the last offset and stops at a new epoch", async () => {
    const page = (offsets: number[], more: boolean, epoch = "E") => ({
      response: {
        publications: offsets.map((offset) => ({
          offset,
          event: "m",
          data: Buffer.from(String(offset)),
        })),
        offset: 5,
        epoch,
        more,
      },
    });
    const fake = await fakeHerald((call) => {
      const since = call.request["sinceOffset"];
      return since === 0 ? page([1, 2], true) : since === 2 ? page([3, 4], true) : page([5], false);
    });
    const seen: unknown[] = [];
    for await (const publication of fake.client().iterateHistory("org:acme:ch:a", { limit: 2 })) {
      seen.push(publication.data);
    }
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect(fake.calls.map((call) => call.request["sinceOffset"])).toEqual([0, 2, 4]);

    const restarted = await fakeHerald((call) =>
      call.request["sinceOffset"] === 0 ? page([1, 2], true) : page([1], false, "F"),
    );
    const read = async () => {
      for await (const _ of restarted.client().iterateHistory("org:acme:ch:a")) void _;
    };
    await expect(read()).rejects.toMatchObject({ code: status.ABORTED, method: "History" });
  });
});
