// The Herald client as a Nest provider: one HeraldServer (one HTTP/2 connection to the
// gateway) shared by the whole app, closed when the app shuts down.
import { Global, Module, type DynamicModule, type OnApplicationShutdown } from "@nestjs/common";
import { HeraldServer, type HeraldServerOptions } from "herald-server";

@Global()
@Module({})
export class HeraldModule implements OnApplicationShutdown {
  constructor(private readonly herald: HeraldServer) {}

  static forRoot(options: HeraldServerOptions): DynamicModule {
    return {
      module: HeraldModule,
      providers: [{ provide: HeraldServer, useFactory: () => new HeraldServer(options) }],
      exports: [HeraldServer],
    };
  }

  onApplicationShutdown(): void {
    this.herald.close();
  }
}
