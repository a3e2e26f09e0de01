// Stands for the app's own persistence.
import { Injectable } from "@nestjs/common";
import { randomUUID } from "node:crypto";

export interface Message {
  id: string;
  channel: string;
  author: string;
  text: string;
}

@Injectable()
export class MessagesService {
  async save(author: string, channel: string, text: string): Promise<Message> {
    return { id: randomUUID(), channel, author, text };
  }

  async isRoomMember(_user: string, _org: string, _room: string): Promise<boolean> {
    return true;
  }
}
