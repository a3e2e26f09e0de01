import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  BackendError,
  serveBackend,
  type BackendServer,
  type RpcContext,
  type RpcRequest,
} from "../../src/index.js";
import { backendService } from "../../src/proto.js";

interface RawResponse {
  data: Buffer;
  error: { code: number; message: string } | null;
}

const open: { server: BackendServer; client: grpc.Client }[] = [];
afterEach(async () => {
  for (const { server, client } of open.splice(0)) {
    client.close();
    await server.close();
  }
});

/** Calls the backend as Herald does. */
async function backend(
  rpc: (request: RpcRequest, context: RpcContext) => unknown,
  options: { token?: string; onError?: (error: unknown) => void } = {},
) {
  const server = await serveBackend({ rpc }, { address: "127.0.0.1:0", ...options });
  const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  open.push({ server, client });
  const method = backendService()["Rpc"] as grpc.MethodDefinition<object, RawResponse>;
  return (request: object, authorization?: string, deadlineMs = 5_000) =>
    new Promise<RawResponse>((resolve, reject) => {
      const metadata = new grpc.Metadata();
      if (authorization) metadata.set("authorization", authorization);
      client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        metadata,
        { deadline: Date.now() + deadlineMs },
        (error, response) => (error ? reject(error) : resolve(response as RawResponse)),
      );
    });
}

const request = {
  user: "alice",
  client: "c1",
  orgs: ["acme"],
  info: Buffer.from('{"name":"Ada"}'),
  method: "message:send",
  data: Buffer.from('{"text":"hi"}'),
  node: "n1",
};

describe("serveBackend", () => {
  it("hands the handler the request with JSON parsed and answers its result as JSON", async () => {
    const seen: RpcRequest[] = [];
    const call = await backend((rpc) => {
      seen.push(rpc);
      return { saved: true };
    });
    const response = await call(request);
    expect(seen).toEqual([
      {
        user: "alice",
        client: "c1",
        orgs: ["acme"],
        info: { name: "Ada" },
        method: "message:send",
        data: { text: "hi" },
        node: "n1",
      },
    ]);
    expect(JSON.parse(response.data.toString())).toEqual({ saved: true });
    expect(response.error).toBeNull();
  });

  it("parses empty info as null and answers undefined as null", async () => {
    const seen: RpcRequest[] = [];
    const call = await backend((rpc) => void seen.push(rpc));
    const response = await call({ ...request, info: Buffer.alloc(0) });
    expect(seen[0]?.info).toBeNull();
    expect(response.data.toString()).toBe("null");
  });

  it("answers a BackendError as the RpcResponse error", async () => {
    const call = await backend(() => {
      throw new BackendError(1403, "not a member of this room");
    });
    expect((await call(request)).error).toEqual({
      code: 1403,
      message: "not a member of this room",
    });
  });

  it("answers another exception with a gRPC error and reports it", async () => {
    const onError = vi.fn();
    const call = await backend(
      async () => {
        throw new Error("database down");
      },
      { onError },
    );
    await expect(call(request)).rejects.toMatchObject({ code: grpc.status.INTERNAL });
    expect(onError).toHaveBeenCalledWith(
      expect.objectContaining({ message: "database down" }),
      expect.objectContaining({ user: "alice" }),
    );
  });

  it("checks Herald's bearer token when one is set", async () => {
    const call = await backend(() => "ok", { token: "s3cret" });
    await expect(call(request)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(call(request, "Bearer wrong")).rejects.toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
    });
    expect((await call(request, "Bearer s3cret")).data.toString()).toBe('"ok"');
  });

  it("passes the deadline, and aborts the signal when Herald stops waiting", async () => {
    let deadline: Date | undefined;
    let aborted!: Promise<void>;
    const call = await backend((_, context) => {
      deadline = context.deadline;
      aborted = new Promise((resolve) => context.signal.addEventListener("abort", () => resolve()));
      return aborted;
    });
    const before = Date.now();
    await expect(call(request, undefined, 200)).rejects.toMatchObject({
      code: grpc.status.DEADLINE_EXCEEDED,
    });
    expect(deadline!.getTime()).toBeGreaterThanOrEqual(before);
    expect(deadline!.getTime()).toBeLessThanOrEqual(before + 1_000);
    // The call already failed on the client's side; the abort follows within the test's timeout.
    await aborted;
  });

  it("refuses error codes under 1000", () => {
    expect(() => new BackendError(999, "x")).toThrow(RangeError);
    expect(new BackendError(1000, "x").code).toBe(1000);
  });
});
