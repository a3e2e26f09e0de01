//! When the fan-out writes to sockets itself, and when it leaves that to the writers.
//!
//! A direct write is one `write(2)` per subscriber from the fan-out's own loop: the
//! cheapest delivery while publications come one at a time, but one thread's work, and
//! never coalesced. When a channel's publications come faster than that loop can write
//! them, queueing is cheaper: the fan-out only pushes, the writers run on every core, and
//! each writes what piled up for its connection in one frame. A channel writes directly
//! while the time since its previous publication is at least [`HEADROOM`] times what its
//! last direct fan-out took.

use std::time::Duration;

use tokio::time::Instant;

/// How much longer than a direct fan-out the pause between publications must be.
const HEADROOM: f64 = 1.5;

#[derive(Default)]
pub struct Pace {
    last_fan_out: Option<Instant>,
    /// How long the channel's last direct fan-out took.
    direct_took: Duration,
}

impl Pace {
    /// Whether the fan-out starting `now` writes directly.
    pub fn direct(&mut self, now: Instant) -> bool {
        let since = self
            .last_fan_out
            .replace(now)
            .map_or(Duration::MAX, |last| now.saturating_duration_since(last));
        since >= self.direct_took.mul_f64(HEADROOM)
    }

    /// Records how long a direct fan-out took.
    pub fn took(&mut self, elapsed: Duration) {
        self.direct_took = elapsed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_directly_while_publications_leave_room_and_queues_when_they_do_not() {
        let start = Instant::now();
        let mut pace = Pace::default();
        assert!(pace.direct(start), "the first publication");
        pace.took(Duration::from_millis(30));
        let at = |ms| start + Duration::from_millis(ms);
        assert!(
            pace.direct(at(100)),
            "100 ms apart: room for a 30 ms fan-out"
        );
        assert!(!pace.direct(at(120)), "20 ms apart: the writers coalesce");
        assert!(
            !pace.direct(at(160)),
            "40 ms apart: not 1.5x the 30 ms it took"
        );
        assert!(pace.direct(at(260)), "publications slowed down again");
    }
}
