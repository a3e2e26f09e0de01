export {
  HeraldServer,
  type CallOptions,
  type DisconnectOptions,
  type HeraldServerOptions,
  type HistoryOptions,
  type PublishOptions,
  type SubscriptionOptions,
  type TlsOptions,
} from "./client.js";
export {
  addBackendService,
  serveBackend,
  type BackendHandler,
  type BackendOptions,
  type BackendServer,
  type RpcContext,
  type ServeBackendOptions,
} from "./backend.js";
export { BackendError, HeraldError } from "./errors.js";
export type { RetryOptions } from "./retry.js";
export type * from "./types.js";
