// An HTTP endpoint of the app that saves a message and publishes it to the channel's
// subscribers (what `server.to(room).emit(…)` did under Socket.IO).
import { Body, Controller, Param, Post } from "@nestjs/common";
import { HeraldServer } from "herald-server";
import { MessagesService } from "./messages.service.js";

interface SendMessage {
  author: string;
  text: string;
}

@Controller("orgs/:org/channels/:channel/messages")
export class MessagesController {
  constructor(
    private readonly herald: HeraldServer,
    private readonly messages: MessagesService,
  ) {}

  @Post()
  async send(
    @Param("org") org: string,
    @Param("channel") channel: string,
    @Body() body: SendMessage,
  ): Promise<{ id: string; offset: number }> {
    const saved = await this.messages.save(body.author, `org:${org}:ch:${channel}`, body.text);
    // The message id as the idempotency key: a retry of this request publishes it once.
    const { offset } = await this.herald.publish(saved.channel, "message.created", saved, {
      idempotencyKey: saved.id,
    });
    return { id: saved.id, offset };
  }
}
