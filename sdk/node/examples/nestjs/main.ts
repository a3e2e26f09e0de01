// Runs the app's HTTP API (port 3000) and its Herald backend (port 7000).
import "reflect-metadata";
import { NestFactory } from "@nestjs/core";
import { AppModule } from "./app.module.js";

const app = await NestFactory.create(AppModule);
app.enableShutdownHooks();
await app.listen(3000);
