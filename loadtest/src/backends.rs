//! The cluster's backends for a run: a `nats-server` and a `redis-server` on free loopback
//! ports, persisting nothing, each ready once it answers its protocol's greeting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::gateway::free_loopback_addrs;
use crate::process::{Process, find_binary};

/// Which backend.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Nats,
    Redis,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Nats => "nats-server",
            Kind::Redis => "redis-server",
        }
    }

    fn args(self, port: u16, dir: &Path) -> Vec<String> {
        let port = port.to_string();
        let args: &[&str] = match self {
            Kind::Nats => &["-a", "127.0.0.1", "-p", &port],
            Kind::Redis => &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.to_string_lossy(),
            ],
        };
        args.iter().map(|&arg| arg.to_owned()).collect()
    }

    fn scheme(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        }
    }

    /// Ready when NATS greets with `INFO {...}`, or Redis answers `PING` with `+PONG`.
    async fn probe(self, port: u16) -> Result<()> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut stream = BufReader::new(stream);
        let expected = match self {
            Kind::Nats => "INFO ",
            Kind::Redis => {
                stream.get_mut().write_all(b"PING\r\n").await?;
                "+PONG"
            }
        };
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        if !line.starts_with(expected) {
            bail!("answered {:?}", line.trim_end());
        }
        Ok(())
    }
}

/// A running backend; killed when dropped.
pub struct Backend {
    pub process: Process,
    /// `nats://127.0.0.1:<port>` or `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl Backend {
    /// Starts `kind` (the binary `bin`, or found on `PATH`, /usr/bin or /usr/sbin) on a free
    /// port and waits until it answers, at most `timeout`.
    pub async fn start(kind: Kind, bin: Option<&PathBuf>, timeout: Duration) -> Result<Backend> {
        let name = kind.binary();
        let bin = match bin {
            Some(bin) => bin.clone(),
            None => find_binary(name).with_context(|| {
                format!(
                    "{name} not found on PATH or in /usr/bin, /usr/sbin: the cluster scenario \
                     runs its own NATS and Redis; install them with `apt-get install \
                     nats-server redis-server` (or pass --{name}-bin)"
                )
            })?,
        };
        let [addr] = free_loopback_addrs()?;
        let dir = Process::run_dir()?;
        let mut command = Command::new(&bin);
        command.args(kind.args(addr.port(), &dir)).current_dir(&dir);
        let mut process = Process::spawn(name, command, &format!("{name}.log"))?;
        eprintln!(
            "spawned {name} pid {} on {addr}, log {}",
            process.pid,
            process.log_path.display()
        );
        process
            .wait_ready(timeout, "answer", || kind.probe(addr.port()))
            .await?;
        Ok(Backend {
            process,
            url: format!("{}://{addr}", kind.scheme()),
        })
    }
}
