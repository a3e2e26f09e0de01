// The app's herald.v1.Backend service: Herald calls it with each client `rpc` (a Socket.IO
// client's emit), where a @SubscribeMessage handler used to run. Point the gateway at it with
// HERALD_BACKEND_ADDR=http://<host>:7000 and the same HERALD_BACKEND_TOKEN.
import {
  Injectable,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from "@nestjs/common";
import {
  BackendError,
  HeraldServer,
  serveBackend,
  type BackendServer,
  type RpcRequest,
} from "herald-server";
import { MessagesService } from "./messages.service.js";

interface JoinRoom {
  org: string;
  room: string;
}

interface SendMessage {
  channel: string;
  text: string;
}

@Injectable()
export class HeraldBackendService implements OnApplicationBootstrap, OnApplicationShutdown {
  private server?: BackendServer;

  constructor(
    private readonly herald: HeraldServer,
    private readonly messages: MessagesService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    this.server = await serveBackend(
      { rpc: (request) => this.rpc(request) },
      {
        address: process.env["HERALD_BACKEND_LISTEN"] ?? "0.0.0.0:7000",
        token: process.env["HERALD_BACKEND_TOKEN"],
      },
    );
  }

  async onApplicationShutdown(): Promise<void> {
    await this.server?.close();
  }

  private async rpc(request: RpcRequest): Promise<unknown> {
    switch (request.method) {
      // Was: @SubscribeMessage("join-room") … client.join(`room:${data.room}`)
      case "join-room": {
        const { org, room } = request.data as JoinRoom;
        if (!(await this.messages.isRoomMember(request.user, org, room))) {
          throw new BackendError(1403, "not a member of this room");
        }
        const channel = `org:${org}:room:${room}`;
        // `client`: this connection only, as socket.join; without it every connection of
        // the user, kept across reconnects.
        await this.herald.subscribe(request.user, channel, { client: request.client });
        return { channel };
      }
      // Was: this.server.to(room).emit("message:new", saved); return { id: saved.id };
      case "message:send": {
        const { channel, text } = request.data as SendMessage;
        const saved = await this.messages.save(request.user, channel, text);
        await this.herald.publish(channel, "message:new", saved, { idempotencyKey: saved.id });
        return { id: saved.id };
      }
      default:
        throw new BackendError(1404, `unknown event ${request.method}`);
    }
  }
}
