/** The real gateway binary (started as sdk/typescript's tests start it) with a HeraldServer client of it. */
import { afterAll } from "vitest";
import { HeraldServer } from "../../src/index.js";
import {
  startGateway,
  type Gateway,
  type GatewayOptions,
} from "../../../typescript/test/helpers/gateway.js";
import { mintToken, type TokenClaims } from "../../../typescript/test/helpers/token.js";
import { connectWs, type WsClient } from "./ws-client.js";

export interface Env {
  gateway: Gateway;
  herald: HeraldServer;
  /** A WebSocket connection of a user, closed after the file's tests. */
  connect(claims: TokenClaims): Promise<WsClient>;
}

/** A gateway and a client of its gRPC API for one test file, stopped after the file's tests. */
export async function gatewayWithHerald(options?: GatewayOptions): Promise<Env> {
  const gateway = await startGateway(options);
  const herald = new HeraldServer({ address: gateway.grpcAddr, apiKey: gateway.apiKey });
  const sockets: WsClient[] = [];
  afterAll(async () => {
    for (const socket of sockets) socket.close();
    herald.close();
    await gateway.stop();
  });
  return {
    gateway,
    herald,
    connect: async (claims) => {
      const socket = await connectWs(gateway.wsUrl, mintToken(gateway.secret, claims));
      sockets.push(socket);
      return socket;
    },
  };
}
