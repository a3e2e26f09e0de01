//! The client of the app's backend (`herald.v1.Backend`, `proto/herald/v1/backend.proto`),
//! which client `rpc` commands call: one lazily connected tonic channel per node (it keeps
//! its HTTP/2 connection and reconnects on its own), TLS for `https://`, a bearer token, a
//! deadline per call, a node-wide cap on calls in flight, the allowed methods, and metrics.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_api::BearerToken;
use herald_api::v1::backend_client::BackendClient;
use herald_api::v1::{RpcRequest, RpcResponse};
use herald_protocol::codes::MIN_BACKEND_CODE;
use herald_protocol::publication::validate_data;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::{BackendConfig, Limits};
use crate::metrics;

/// Distinct method names that get their own metric label (besides the listed ones); the
/// rest are counted as `other`, so clients cannot grow the label set without bound.
const MAX_METHOD_LABELS: usize = 64;

/// Why the backend client could not be set up (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum BackendSetupError {
    #[error("HERALD_BACKEND_ADDR {addr:?}: {source}")]
    Addr {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("HERALD_BACKEND_TLS_CA {path:?}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HERALD_BACKEND_TOKEN is not a valid header value")]
    Token,
}

/// Why a call got no usable answer. The backend's own refusal is an answer: [`Reply::Refused`].
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Every call slot of the node stayed taken until the call's deadline.
    #[error("backend unavailable: too many calls in flight on this node")]
    Busy,
    #[error("backend unavailable: its reply is not usable: {0}")]
    InvalidReply(String),
    #[error("backend timeout")]
    Timeout,
}

impl BackendError {
    fn label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) | Self::InvalidReply(_) => "unavailable",
            Self::Busy => "rejected",
            Self::Timeout => "timeout",
        }
    }
}

/// The backend's answer.
#[derive(Debug)]
pub enum Reply {
    /// Its `data`, compact JSON (`null` when it sent none).
    Data(Arc<RawValue>),
    /// Its `error`: a code of at least [`MIN_BACKEND_CODE`] and its message.
    Refused { code: u32, message: String },
}

/// How a call was refused before reaching the backend, for the metrics.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// The method is not in `HERALD_BACKEND_METHODS`.
    NotAllowed,
    /// Over the connection's rpc rate or in-flight cap.
    Rejected,
}

pub struct Backend {
    /// Sends `Bearer <HERALD_BACKEND_TOKEN>` when one is set.
    client: BackendClient<InterceptedService<Channel, BearerToken>>,
    timeout: Duration,
    permits: Semaphore,
    methods: Methods,
    labels: MethodLabels,
    /// The largest and deepest reply data passed on to a client.
    max_reply_bytes: usize,
    max_reply_depth: usize,
}

impl Backend {
    /// The client of `config.addr`; connects at the first call.
    pub fn new(
        addr: &str,
        config: &BackendConfig,
        limits: &Limits,
    ) -> Result<Backend, BackendSetupError> {
        let invalid = |source| BackendSetupError::Addr {
            addr: addr.to_owned(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(invalid)?
            .tcp_nodelay(true)
            // A dead backend host fails calls quickly rather than at each call's deadline.
            .connect_timeout(config.timeout);
        if addr.starts_with("https://") {
            let tls = match &config.tls_ca {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|source| BackendSetupError::CaFile {
                        path: path.clone(),
                        source,
                    })?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            endpoint = endpoint.tls_config(tls).map_err(invalid)?;
        }
        let token = match &config.token {
            Some(token) => {
                BearerToken::new(token.expose()).map_err(|_| BackendSetupError::Token)?
            }
            None => BearerToken::none(),
        };
        Ok(Backend {
            client: BackendClient::with_interceptor(endpoint.connect_lazy(), token),
            timeout: config.timeout,
            permits: Semaphore::new(config.max_concurrency),
            methods: Methods::new(&config.methods),
            labels: MethodLabels::new(&config.methods),
            max_reply_bytes: limits.reply_bytes(),
            max_reply_depth: limits.max_json_depth,
        })
    }

    /// Whether clients may call `method`.
    pub fn allows(&self, method: &str) -> bool {
        self.methods.allows(method)
    }

    /// Counts a call refused before it reached the backend.
    pub fn refused(&self, method: &str, refusal: Refusal) {
        let result = match refusal {
            Refusal::NotAllowed => "not_allowed",
            Refusal::Rejected => "rejected",
        };
        metrics::counter!(metrics::BACKEND_REQUESTS, "method" => self.labels.label(method), "result" => result)
            .increment(1);
    }

    /// Calls the backend, within the timeout from now (waiting for a call slot included).
    pub async fn call(&self, request: RpcRequest) -> Result<Reply, BackendError> {
        let started = Instant::now();
        let label = self.labels.label(&request.method);
        let result = self.call_by(started + self.timeout, request).await;
        let outcome = match &result {
            Ok(Reply::Data(_)) => "ok",
            Ok(Reply::Refused { .. }) => "error",
            Err(error) => error.label(),
        };
        metrics::histogram!(metrics::BACKEND_DURATION, "method" => label.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(metrics::BACKEND_REQUESTS, "method" => label, "result" => outcome)
            .increment(1);
        result
    }

    async fn call_by(&self, deadline: Instant, request: RpcRequest) -> Result<Reply, BackendError> {
        let _permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| BackendError::Busy)?
            .expect("the semaphore is never closed");
        let mut request = tonic::Request::new(request);
        // The backend sees the deadline too (`grpc-timeout`), and can give up in time.
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let mut client = self.client.clone();
        let response = tokio::time::timeout_at(deadline, client.rpc(request))
            .await
            .map_err(|_| BackendError::Timeout)?;
        match response {
            Ok(response) => self.reply(response.into_inner()),
            // The backend gave up at the deadline it was told (`grpc-timeout`).
            Err(status)
                if status.code() == Code::DeadlineExceeded || Instant::now() >= deadline =>
            {
                Err(BackendError::Timeout)
            }
            Err(status) => Err(BackendError::Unavailable(status.message().to_owned())),
        }
    }

    fn reply(&self, response: RpcResponse) -> Result<Reply, BackendError> {
        if let Some(error) = response.error {
            return Ok(Reply::Refused {
                code: error.code.max(MIN_BACKEND_CODE),
                message: error.message,
            });
        }
        if response.data.is_empty() {
            return Ok(Reply::Data(Arc::from(RawValue::NULL.to_owned())));
        }
        validate_data(&response.data, self.max_reply_bytes, self.max_reply_depth)
            .map(Reply::Data)
            .map_err(|error| BackendError::InvalidReply(error.to_string()))
    }
}

/// `HERALD_BACKEND_METHODS`: exact names and prefixes (`message:*`); none or `*` allows all.
struct Methods {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl Methods {
    fn new(listed: &[String]) -> Self {
        let (prefixes, exact): (Vec<&String>, Vec<&String>) =
            listed.iter().partition(|method| method.ends_with('*'));
        let mut prefixes: Vec<String> = prefixes
            .into_iter()
            .map(|method| method.trim_end_matches('*').to_owned())
            .collect();
        if listed.is_empty() {
            prefixes.push(String::new());
        }
        Self {
            exact: exact.into_iter().cloned().collect(),
            prefixes,
        }
    }

    fn allows(&self, method: &str) -> bool {
        self.exact.contains(method) || self.prefixes.iter().any(|p| method.starts_with(p))
    }
}

/// The metric label of a method: its name when listed exactly in `HERALD_BACKEND_METHODS`
/// or among the first [`MAX_METHOD_LABELS`] other names seen, `other` after that.
struct MethodLabels {
    listed: HashSet<String>,
    seen: Mutex<HashSet<String>>,
}

impl MethodLabels {
    fn new(listed: &[String]) -> Self {
        Self {
            listed: listed
                .iter()
                .filter(|method| !method.ends_with('*'))
                .cloned()
                .collect(),
            seen: Mutex::default(),
        }
    }

    fn label(&self, method: &str) -> String {
        if self.listed.contains(method) {
            return method.to_owned();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(method) {
            return method.to_owned();
        }
        if seen.len() < MAX_METHOD_LABELS {
            seen.insert(method.to_owned());
            return method.to_owned();
        }
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigArgs};
    use crate::error::Failure;

    fn request(method: &str) -> RpcRequest {
        RpcRequest {
            method: method.to_owned(),
            ..RpcRequest::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_a_slot_within_its_timeout_only() {
        let config = Config::load(&ConfigArgs::default()).unwrap();
        let settings = BackendConfig {
            max_concurrency: 1,
            timeout: Duration::from_millis(300),
            ..config.backend
        };
        // Never reached: the only slot stays taken.
        let backend = Backend::new("http://127.0.0.1:1", &settings, &config.limits).unwrap();
        let _taken = backend.permits.try_acquire().unwrap();
        let started = Instant::now();
        let error = backend.call(request("m")).await.unwrap_err();
        assert!(matches!(error, BackendError::Busy), "{error}");
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(
            Failure::from(error).code,
            herald_protocol::ErrorCode::BackendUnavailable
        );
    }

    #[test]
    fn replies_become_data_or_refusals() {
        let config = Config::load(&ConfigArgs::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let backend = Backend::new("http://127.0.0.1:1", &config.backend, &config.limits).unwrap();
        let data = |text: &str| RpcResponse {
            data: text.as_bytes().to_vec(),
            error: None,
        };
        let Ok(Reply::Data(spaced)) = backend.reply(data("{ \"a\" :\n [1, 2] }")) else {
            panic!("data")
        };
        assert_eq!(
            spaced.get(),
            r#"{"a":[1,2]}"#,
            "compact, so it fits a JSON line"
        );
        let Ok(Reply::Data(none)) = backend.reply(data("")) else {
            panic!("data")
        };
        assert_eq!(none.get(), "null");
        assert!(matches!(
            backend.reply(data("{nope")),
            Err(BackendError::InvalidReply(_))
        ));
        let refused = backend.reply(RpcResponse {
            data: Vec::new(),
            error: Some(herald_api::v1::RpcError {
                code: 42,
                message: "no".into(),
            }),
        });
        assert!(
            matches!(refused, Ok(Reply::Refused { code: 1000, ref message }) if message == "no"),
            "{refused:?}"
        );
    }

    fn list(methods: &[&str]) -> Vec<String> {
        methods.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn methods_match_exactly_or_by_prefix() {
        let all = Methods::new(&[]);
        assert!(all.allows("anything:at/all"));
        let star = Methods::new(&list(&["*"]));
        assert!(star.allows("x"));
        let some = Methods::new(&list(&["message:*", "user.get"]));
        assert!(some.allows("message:send") && some.allows("message:"));
        assert!(some.allows("user.get"));
        assert!(!some.allows("user.get2") && !some.allows("messages") && !some.allows("x"));
    }

    #[test]
    fn method_labels_are_bounded() {
        let labels = MethodLabels::new(&list(&["listed", "prefix:*"]));
        for n in 0..MAX_METHOD_LABELS {
            assert_eq!(labels.label(&format!("m{n}")), format!("m{n}"));
        }
        assert_eq!(labels.label("one-too-many"), "other");
        assert_eq!(labels.label("m3"), "m3");
        assert_eq!(labels.label("listed"), "listed");
    }
}
