/** The service definitions, loaded from the .proto files this package ships in `proto/`. */
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

// `proto/` sits beside `src/` and `dist/`: the same path from either.
const PROTO_DIR = fileURLToPath(new URL("../proto/", import.meta.url));
const FILES = ["herald/v1/api.proto", "herald/v1/backend.proto"];

let loaded: { herald: ServiceDefinition; backend: ServiceDefinition } | undefined;

function load(): { herald: ServiceDefinition; backend: ServiceDefinition } {
  if (loaded) return loaded;
  if (!existsSync(`${PROTO_DIR}${FILES[0]}`)) {
    throw new Error(`herald-server: ${PROTO_DIR} has no protos; run npm run build`);
  }
  const definition = loadSync(FILES, {
    includeDirs: [PROTO_DIR],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  loaded = {
    herald: definition["herald.v1.Herald"] as ServiceDefinition,
    backend: definition["herald.v1.Backend"] as ServiceDefinition,
  };
  return loaded;
}

/** `herald.v1.Herald/<name>`. */
export function heraldMethod<Req, Res>(name: string): MethodDefinition<Req, Res> {
  const method = load().herald[name];
  if (!method) throw new Error(`herald.v1.Herald has no method ${name}`);
  return method as MethodDefinition<Req, Res>;
}

/** The `herald.v1.Herald` service (for test doubles of the gateway). */
export function heraldService(): ServiceDefinition {
  return load().herald;
}

/** The `herald.v1.Backend` service. */
export function backendService(): ServiceDefinition {
  return load().backend;
}
