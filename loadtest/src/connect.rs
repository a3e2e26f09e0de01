//! Opening many authenticated, subscribed connections, a bounded number at a time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{Conn, Opening};
use crate::gateway::Target;

/// Longest one connection may take to upgrade, connect and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one connection failed, classified so the report can say what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FailureKind {
    /// EMFILE: this process is out of file descriptors.
    TooManyOpenFiles,
    /// EADDRNOTAVAIL: out of ephemeral ports.
    NoLocalPorts,
    Timeout,
    Other,
}

/// The open connections, each read by its own task, and the signal that stops them.
pub struct Readers<T> {
    pub tasks: JoinSet<T>,
    /// Send `true` to stop the tasks that are still reading.
    pub cancel: watch::Sender<bool>,
}

/// Connects `n` clients (users `<sub_prefix><i>`), subscribing client `i` to
/// `channel_of(i)` (or stopping at an earlier stage), at most `concurrency` at a time, and hands each to a task
/// `read(conn, cancelled)` as soon as it is subscribed (so it is read from at once,
/// answering the server's pings). Fails on the first failed connection, after the ones in
/// flight have finished, with a count of what succeeded.
pub async fn connect_all<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
    target: &mut Target,
    opening: Opening,
    n: usize,
    concurrency: usize,
    sub_prefix: &str,
    channel_of: impl Fn(usize) -> String,
    read: impl Fn(Conn, watch::Receiver<bool>) -> F,
) -> Result<Readers<T>> {
    let (cancel, cancelled) = watch::channel(false);
    let mut readers = JoinSet::new();
    let started = Instant::now();
    let ws_url: Arc<str> = Arc::from(target.ws_url.as_str());
    let mut opened = 0;
    let mut failures: BTreeMap<FailureKind, usize> = BTreeMap::new();
    let mut first_failure: Option<(FailureKind, String)> = None;
    let mut tasks = JoinSet::new();
    let mut next = 0;
    let mut last_progress = Instant::now();
    loop {
        while first_failure.is_none() && next < n && tasks.len() < concurrency.max(1) {
            let channel = channel_of(next);
            let token = target.token(&format!("{sub_prefix}{next}"), &channel)?;
            let ws_url = ws_url.clone();
            tasks.spawn(async move {
                match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    open(opening, &ws_url, &token, &channel),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err((
                        FailureKind::Timeout,
                        format!("no connect + subscribe within {CONNECT_TIMEOUT:?}"),
                    )),
                }
            });
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(conn)) => {
                opened += 1;
                readers.spawn(read(conn, cancelled.clone()));
            }
            Ok(Err((kind, message))) => {
                *failures.entry(kind).or_default() += 1;
                first_failure.get_or_insert((kind, message));
            }
            Err(join_error) => {
                *failures.entry(FailureKind::Other).or_default() += 1;
                first_failure.get_or_insert((FailureKind::Other, join_error.to_string()));
            }
        }
        if last_progress.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "  {} of {n} connected and subscribed ({:.1?})",
                opened,
                started.elapsed()
            );
            last_progress = Instant::now();
        }
    }
    let Some((kind, message)) = first_failure else {
        return Ok(Readers {
            tasks: readers,
            cancel,
        });
    };
    let alive = match target.check_alive() {
        Ok(()) => String::new(),
        Err(error) => format!("\n{error:#}"),
    };
    let hint = match kind {
        FailureKind::TooManyOpenFiles => {
            "\nThe load generator ran out of file descriptors (EMFILE): raise the open-file \
             limit in this shell, e.g. `ulimit -n 65536`, and run again (the gateway inherits it)."
        }
        FailureKind::NoLocalPorts => {
            "\nOut of ephemeral ports (EADDRNOTAVAIL): widen net.ipv4.ip_local_port_range or use \
             fewer connections."
        }
        FailureKind::Timeout => {
            "\nA connection got no answer in time: the gateway may be overloaded or out of file \
             descriptors (check its log)."
        }
        FailureKind::Other => "",
    };
    let counts: Vec<String> = failures
        .iter()
        .map(|(kind, count)| format!("{kind:?}: {count}"))
        .collect();
    bail!(
        "connecting failed: {} of {n} connected before stopping, {} failed ({}); first error: \
         {message}{hint}{alive}",
        opened,
        failures.values().sum::<usize>(),
        counts.join(", ")
    )
}

/// Opens one connection, sends `connect` and subscribes (up to `stage`).
async fn open(
    opening: Opening,
    ws_url: &str,
    token: &str,
    channel: &str,
) -> Result<Conn, (FailureKind, String)> {
    Conn::open_until(opening, ws_url, token, channel)
        .await
        .map_err(|(step, error)| classify(step, channel, &*error))
}

fn classify(
    step: &str,
    channel: &str,
    error: &(dyn std::error::Error + 'static),
) -> (FailureKind, String) {
    let mut kind = FailureKind::Other;
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.raw_os_error() {
                Some(24) => kind = FailureKind::TooManyOpenFiles,
                Some(99) => kind = FailureKind::NoLocalPorts,
                _ => {}
            }
        }
        if let Some(herald_client::ClientError::Timeout) = current.downcast_ref() {
            kind = FailureKind::Timeout;
        }
        cause = current.source();
    }
    let message = match step {
        "subscribe" => format!("subscribe to {channel}: {error}"),
        _ => format!("{step}: {error}"),
    };
    if message.contains("Too many open files") {
        kind = FailureKind::TooManyOpenFiles;
    }
    (kind, message)
}
