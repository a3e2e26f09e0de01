//! Replies bounded by bytes as well as by count. A channel's history (or a big presence)
//! can hold many megabytes; answered in one reply it would overflow the connection's queue
//! and close it 4201, again on every reconnect. So `history`, recovery and `presence`
//! answer one page at a time, at most the reply budget (always at least one item), and say
//! when there is more.

use std::future::Future;

use herald_protocol::Publication;
use serde::Serialize;

use crate::state::{HistorySlice, Position};

/// The first read of a page asks for this many publications at most; later reads are sized
/// from the bytes per publication seen so far, so a page of large publications does not
/// read a whole history of them from Redis to send a few.
const FIRST_READ: usize = 16;

/// One page of a channel's history.
#[derive(Debug)]
pub struct HistoryPage {
    /// Contiguous publications after the asked offset, oldest first, none past `position`.
    pub publications: Vec<Publication>,
    /// The channel's position at the page's first read.
    pub position: Position,
    /// The page stopped before `position.offset`: the rest is fetched from the last offset in
    /// `publications`.
    pub more: bool,
}

/// Reads the publications after `since_offset`, oldest first, stopping at `limit` of them,
/// at `budget` bytes (as they encode in a reply; at least one publication), or at the
/// channel's position at the first read, whichever comes first.
///
/// `read(since, count)` is one history read. The page never goes past the position of the
/// first read, so a subscribe that answers with that position gets no publication both in
/// its reply and as a live push. It also stops at a change of epoch or a gap between reads
/// (history trimmed meanwhile), with `more`: the next page shows the client what happened.
pub async fn history_page<E, F, Fut>(
    mut read: F,
    since_offset: u64,
    limit: usize,
    budget: usize,
) -> Result<HistoryPage, E>
where
    F: FnMut(u64, usize) -> Fut,
    Fut: Future<Output = Result<HistorySlice, E>>,
{
    let limit = limit.max(1);
    let mut asked = limit.min(FIRST_READ);
    let first = read(since_offset, asked).await?;
    let position = first.position;
    let mut chunk = first.publications;
    let mut publications: Vec<Publication> = Vec::new();
    let mut bytes = 0;
    'reads: loop {
        let got = chunk.len();
        for publication in chunk {
            let last = publications.last().map(|p| p.offset);
            if publication.offset > position.offset
                || last.is_some_and(|last| publication.offset != last + 1)
            {
                break 'reads;
            }
            let size = json_len(&publication) + 1;
            if last.is_some() && bytes + size > budget {
                break 'reads;
            }
            bytes += size;
            publications.push(publication);
            if publications.len() >= limit {
                break 'reads;
            }
        }
        let reached = publications.last().map_or(since_offset, |p| p.offset);
        if got < asked || reached >= position.offset {
            break;
        }
        let per_publication = (bytes / publications.len().max(1)).max(1);
        asked =
            (budget.saturating_sub(bytes) / per_publication + 1).min(limit - publications.len());
        let next = read(reached, asked).await?;
        if next.position.epoch != position.epoch {
            break;
        }
        chunk = next.publications;
    }
    let more = publications
        .last()
        .is_some_and(|last| last.offset < position.offset);
    Ok(HistoryPage {
        publications,
        position,
        more,
    })
}

/// How many bytes `value` takes as JSON, without building the JSON.
pub fn json_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting cannot fail: the writer never errors and these values always serialize.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use herald_protocol::ChannelName;
    use serde_json::value::RawValue;

    use super::*;

    fn publication(offset: u64, epoch: &str, pad: usize) -> Publication {
        let data = format!("\"{}\"", "x".repeat(pad));
        Publication {
            channel: ChannelName::parse("org:acme:ch:big").unwrap(),
            event: Arc::from("m"),
            data: Arc::from(RawValue::from_string(data).unwrap()),
            offset,
            epoch: Arc::from(epoch),
            ts: 1,
            from: None,
        }
    }

    /// A history of `top` publications of `pad` bytes of data each; records each read.
    struct FakeHistory {
        top: u64,
        pad: usize,
        reads: Mutex<Vec<(u64, usize)>>,
    }

    impl FakeHistory {
        fn new(top: u64, pad: usize) -> Self {
            Self {
                top,
                pad,
                reads: Mutex::default(),
            }
        }

        async fn read(&self, since: u64, count: usize) -> Result<HistorySlice, ()> {
            self.reads.lock().unwrap().push((since, count));
            Ok(HistorySlice {
                publications: (since + 1..=self.top)
                    .take(count)
                    .map(|offset| publication(offset, "e", self.pad))
                    .collect(),
                position: Position {
                    offset: self.top,
                    epoch: "e".into(),
                },
            })
        }
    }

    fn offsets(page: &HistoryPage) -> Vec<u64> {
        page.publications.iter().map(|p| p.offset).collect()
    }

    #[tokio::test]
    async fn stops_at_the_byte_budget_and_says_there_is_more() {
        let history = FakeHistory::new(100, 1000);
        let size = json_len(&publication(1, "e", 1000)) + 1;
        let page = history_page(|s, n| history.read(s, n), 0, 100, size * 5)
            .await
            .unwrap();
        assert_eq!(offsets(&page), vec![1, 2, 3, 4, 5]);
        assert!(page.more);
        assert_eq!(page.position.offset, 100);
        assert!(
            history.reads.lock().unwrap().iter().all(|(_, n)| *n <= 16),
            "no read of the whole history for five publications"
        );
    }

    #[tokio::test]
    async fn reads_on_until_the_limit_or_the_end() {
        let history = FakeHistory::new(100, 10);
        let page = history_page(|s, n| history.read(s, n), 0, 40, 1 << 20)
            .await
            .unwrap();
        assert_eq!(offsets(&page), (1..=40).collect::<Vec<_>>());
        assert!(
            page.more,
            "stopped at the limit, before the channel's offset"
        );
        let page = history_page(|s, n| history.read(s, n), 90, 100, 1 << 20)
            .await
            .unwrap();
        assert_eq!(offsets(&page), (91..=100).collect::<Vec<_>>());
        assert!(!page.more);
        let page = history_page(|s, n| history.read(s, n), 100, 100, 1 << 20)
            .await
            .unwrap();
        assert!(page.publications.is_empty() && !page.more);
    }

    #[tokio::test]
    async fn always_holds_one_publication() {
        let history = FakeHistory::new(3, 5000);
        let page = history_page(|s, n| history.read(s, n), 0, 10, 100)
            .await
            .unwrap();
        assert_eq!(offsets(&page), vec![1]);
        assert!(page.more);
    }

    #[tokio::test]
    async fn never_goes_past_the_first_position_nor_across_an_epoch_or_a_gap() {
        // Publications keep arriving between reads: the page ends at the first position.
        let top = Mutex::new(20u64);
        let growing = |since: u64, count: usize| {
            let mut top = top.lock().unwrap();
            let slice = HistorySlice {
                publications: (since + 1..=*top)
                    .take(count)
                    .map(|offset| publication(offset, "e", 10))
                    .collect(),
                position: Position {
                    offset: *top,
                    epoch: "e".into(),
                },
            };
            *top += 5;
            std::future::ready(Ok::<_, ()>(slice))
        };
        let page = history_page(growing, 0, 100, 1 << 20).await.unwrap();
        assert_eq!(offsets(&page), (1..=20).collect::<Vec<_>>());
        assert!(!page.more);

        // The second read finds a new epoch: stop, and let the next page show it.
        let reads = Mutex::new(0);
        let restarted = |since: u64, count: usize| {
            let mut reads = reads.lock().unwrap();
            *reads += 1;
            let epoch = if *reads == 1 { "e" } else { "f" };
            std::future::ready(Ok::<_, ()>(HistorySlice {
                publications: (since + 1..=50)
                    .take(count)
                    .map(|offset| publication(offset, epoch, 10))
                    .collect(),
                position: Position {
                    offset: 50,
                    epoch: epoch.into(),
                },
            }))
        };
        let page = history_page(restarted, 0, 100, 1 << 20).await.unwrap();
        assert_eq!(offsets(&page), (1..=16).collect::<Vec<_>>());
        assert!(page.more);

        // History was trimmed between reads: the page ends before the gap.
        let trimmed = |since: u64, count: usize| {
            let from = if since == 0 { 1 } else { since + 10 };
            std::future::ready(Ok::<_, ()>(HistorySlice {
                publications: (from..=60)
                    .take(count)
                    .map(|offset| publication(offset, "e", 10))
                    .collect(),
                position: Position {
                    offset: 60,
                    epoch: "e".into(),
                },
            }))
        };
        let page = history_page(trimmed, 0, 100, 1 << 20).await.unwrap();
        assert_eq!(offsets(&page), (1..=16).collect::<Vec<_>>());
        assert!(page.more);
    }

    #[test]
    fn json_len_is_the_encoded_length() {
        let publication = publication(7, "e", 33);
        assert_eq!(
            json_len(&publication),
            serde_json::to_vec(&publication).unwrap().len()
        );
    }
}
