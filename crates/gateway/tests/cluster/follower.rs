//! A subscriber that behaves as the SDK does: on a lost connection it reconnects (to the
//! next node in its list) and resubscribes with `recover` from the last position it saw; on
//! a server `unsubscribe` push it resubscribes at once. It records every publication in the
//! order received, and every recovery result, so a test can check for gaps and duplicates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_client::{Client, Push, ReceivedPublication, StreamPosition};
use herald_testkit::tokens::member_token;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Default)]
pub struct Received {
    /// (epoch, offset, n) of every publication, in the order received.
    pub publications: Vec<(String, u64, u64)>,
    /// `recovered` of every subscribe that asked to recover.
    pub recoveries: Vec<bool>,
    /// Connections made (1 + reconnects).
    pub connections: usize,
}

impl Received {
    /// Offsets of the given epoch, in the order received.
    pub fn offsets(&self, epoch: &str) -> Vec<u64> {
        self.publications
            .iter()
            .filter(|(e, _, _)| e == epoch)
            .map(|(_, offset, _)| *offset)
            .collect()
    }

    pub fn last_epoch(&self) -> Option<&str> {
        self.publications.last().map(|(e, _, _)| e.as_str())
    }

    pub fn values(&self) -> Vec<u64> {
        self.publications.iter().map(|(_, _, n)| *n).collect()
    }
}

pub struct Follower {
    received: Arc<Mutex<Received>>,
    changed: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Follows `channel` as user `sub`, connecting to `urls` in turn (first one first).
    /// Returns once the first subscribe succeeded.
    pub async fn start(sub: &str, urls: Vec<String>, channel: &str) -> Follower {
        let received = Arc::new(Mutex::new(Received::default()));
        let (notify, changed) = watch::channel(0usize);
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follow(
            member_token(sub),
            urls,
            channel.to_owned(),
            received.clone(),
            notify,
            subscribed_tx,
        ));
        herald_testkit::within("the follower's first subscribe", subscribed_rx)
            .await
            .expect("follower subscribed");
        Follower {
            received,
            changed,
            task,
        }
    }

    pub fn received(&self) -> Received {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds for what was received.
    pub async fn wait_until(&mut self, what: &str, done: impl Fn(&Received) -> bool) -> Received {
        let result = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if done(&self.received()) {
                    return;
                }
                if self.changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let received = self.received();
        assert!(
            result.is_ok() && done(&received),
            "timed out waiting for {what}; received {:?}",
            received
        );
        received
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    token: String,
    urls: Vec<String>,
    channel: String,
    received: Arc<Mutex<Received>>,
    notify: watch::Sender<usize>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    let mut position: Option<StreamPosition> = None;
    for url in urls.iter().cycle() {
        let Ok(Ok((client, _))) =
            tokio::time::timeout(Duration::from_secs(2), Client::connect(url, &token)).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        received.lock().unwrap().connections += 1;
        // Subscribe (again after a server unsubscribe) until the connection ends.
        loop {
            let Ok(Ok(result)) = tokio::time::timeout(
                Duration::from_secs(5),
                client.subscribe_with(&channel, None, position.clone()),
            )
            .await
            else {
                break;
            };
            {
                let mut received = received.lock().unwrap();
                if position.is_some() {
                    received.recoveries.push(result.recovered);
                }
                for publication in &result.publications {
                    record(&mut received, publication);
                }
            }
            position = Some(StreamPosition {
                offset: result
                    .publications
                    .last()
                    .map_or(result.offset, |p| p.offset),
                epoch: result.epoch.clone(),
            });
            notify.send_modify(|n| *n += 1);
            if let Some(subscribed) = subscribed.take() {
                let _ = subscribed.send(());
            }
            match read_pushes(&client, &channel, &received, &notify, &mut position).await {
                Ended::Resubscribe => continue,
                Ended::Closed => break,
            }
        }
    }
}

enum Ended {
    Resubscribe,
    Closed,
}

async fn read_pushes(
    client: &Client,
    channel: &str,
    received: &Mutex<Received>,
    notify: &watch::Sender<usize>,
    position: &mut Option<StreamPosition>,
) -> Ended {
    loop {
        match client.next_push().await {
            None => return Ended::Closed,
            Some(Push {
                publication: Some(publication),
                ..
            }) => {
                record(&mut received.lock().unwrap(), &publication);
                *position = Some(StreamPosition {
                    offset: publication.offset,
                    epoch: publication.epoch.clone(),
                });
                notify.send_modify(|n| *n += 1);
            }
            Some(Push {
                unsubscribe: Some(_),
                channel: Some(c),
                ..
            }) if c == channel => return Ended::Resubscribe,
            Some(_) => {}
        }
    }
}

fn record(received: &mut Received, publication: &ReceivedPublication) {
    let n = serde_json::from_str::<serde_json::Value>(publication.data.get())
        .ok()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(u64::MAX);
    received
        .publications
        .push((publication.epoch.clone(), publication.offset, n));
}
