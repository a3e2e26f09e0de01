import { Module } from "@nestjs/common";
import { HeraldBackendService } from "./herald-backend.service.js";
import { HeraldModule } from "./herald.module.js";
import { MessagesController } from "./messages.controller.js";
import { MessagesService } from "./messages.service.js";

@Module({
  imports: [
    HeraldModule.forRoot({
      address: process.env["HERALD_GRPC_ADDR"] ?? "127.0.0.1:50051",
      apiKey: process.env["HERALD_API_KEY"] ?? "",
    }),
  ],
  controllers: [MessagesController],
  providers: [MessagesService, HeraldBackendService],
})
export class AppModule {}
