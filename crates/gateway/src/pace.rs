//! When the fan-out writes to sockets itself, and when it leaves that to the writers; and
//! when a busy channel's publications wait to go out together ([`Coalesce`]).
//!
//! A direct write is one `write(2)` per subscriber from the fan-out's own loop: the
//! cheapest delivery while publications come one at a time, but one thread's work, and
//! never coalesced. When a channel's publications come faster than that loop can write
//! them, queueing is cheaper: the fan-out only pushes, the writers run on every core, and
//! each writes what piled up for its connection in one frame. A channel writes directly
//! while the time since its previous publication is at least [`HEADROOM`] times what its
//! last direct fan-out took. That estimate halves every [`HALF_LIFE`] since it was
//! measured, so a channel whose publications slowed down, or whose one slow fan-out was a
//! hiccup (the thread descheduled), tries a direct fan-out again and measures anew; by time,
//! not by count, so a fast channel pays for such a probe about once a second.

use std::time::Duration;

use tokio::time::Instant;

/// How much longer than a direct fan-out the pause between publications must be. Over 1,
/// so that a publisher that waits for each fan-out (standalone, one publish in flight)
/// gets coalescing rather than one direct fan-out after another.
const HEADROOM: f64 = 1.2;

/// How fast the direct estimate fades.
const HALF_LIFE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Pace {
    last_fan_out: Option<Instant>,
    /// How long the channel's last direct fan-out took, and when it ended.
    direct_took: Duration,
    measured_at: Option<Instant>,
}

impl Pace {
    /// Whether the fan-out starting `now` writes directly.
    pub fn direct(&mut self, now: Instant) -> bool {
        let since = self
            .last_fan_out
            .replace(now)
            .map_or(Duration::MAX, |last| now.saturating_duration_since(last));
        !self.busy(now, since)
    }

    /// Whether publications `pause` apart come faster than a direct fan-out of the channel
    /// takes (the same estimate as [`Pace::direct`], without recording a fan-out).
    pub fn busy(&self, now: Instant, pause: Duration) -> bool {
        let age = self
            .measured_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let fading = 0.5f64.powf(age.as_secs_f64() / HALF_LIFE.as_secs_f64());
        pause < self.direct_took.mul_f64(HEADROOM * fading)
    }

    /// Records how long the direct fan-out that started at `started` took.
    pub fn took(&mut self, started: Instant, elapsed: Duration) {
        self.direct_took = elapsed;
        self.measured_at = Some(started + elapsed);
    }
}

/// Gathers a busy channel's publications into one fan-out (`HERALD_FANOUT_COALESCE_MS`):
/// a publication that comes within the window of the one before it, on a channel whose
/// publications come faster than one direct fan-out of it takes ([`Pace::busy`]), waits
/// until the window after it, and goes out with every publication that arrived by then,
/// their frames in one write per subscriber. Writes cost about the same for one frame as for
/// several, so a channel with many subscribers and publications in quick succession pays a
/// fraction of the CPU, for at most the window of added latency. A channel whose fan-out
/// keeps up (small, or publishing one at a time) never waits. Off (zero) by default: the
/// window is latency, which only a deployment with large, busy channels should trade.
pub struct Coalesce {
    window: Duration,
    previous: Option<Instant>,
}

impl Coalesce {
    pub fn new(window: Duration) -> Coalesce {
        Coalesce {
            window,
            previous: None,
        }
    }

    /// When the fan-out of a publication that arrived `now` starts; `busy` tells, given the
    /// pause since the previous publication, whether the channel's fan-out falls behind.
    pub fn start_at(&mut self, now: Instant, busy: impl FnOnce(Duration) -> bool) -> Instant {
        match self.previous.replace(now) {
            Some(previous) => {
                let pause = now.saturating_duration_since(previous);
                if pause < self.window && busy(pause) {
                    now + self.window
                } else {
                    now
                }
            }
            None => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_within_the_window_of_the_previous_one_waits_for_the_window() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let busy = |_| true;
        let mut coalesce = Coalesce::new(Duration::from_millis(100));
        assert_eq!(
            coalesce.start_at(start, busy),
            start,
            "the first goes at once"
        );
        assert_eq!(
            coalesce.start_at(at(150), busy),
            at(150),
            "150 ms later: at once"
        );
        assert_eq!(
            coalesce.start_at(at(200), busy),
            at(300),
            "50 ms later: waits"
        );
        assert_eq!(
            coalesce.start_at(at(300), busy),
            at(300),
            "100 ms later: at once"
        );
        assert_eq!(
            coalesce.start_at(at(310), |_| false),
            at(310),
            "10 ms later, on a channel whose fan-out keeps up: at once"
        );
        let mut off = Coalesce::new(Duration::ZERO);
        assert_eq!(off.start_at(start, busy), start);
        assert_eq!(off.start_at(start, busy), start, "off: never waits");
    }

    #[test]
    fn a_channel_is_busy_while_publications_come_faster_than_its_fan_out() {
        let start = Instant::now();
        let mut pace = Pace::default();
        assert!(
            !pace.busy(start, Duration::ZERO),
            "never measured: not busy"
        );
        pace.took(start, Duration::from_millis(30));
        let at = |ms| start + Duration::from_millis(ms);
        assert!(
            pace.busy(at(30), Duration::from_millis(12)),
            "80/s after a 30 ms fan-out"
        );
        assert!(
            !pace.busy(at(30), Duration::from_millis(100)),
            "10/s: it keeps up"
        );
        assert!(
            !pace.busy(at(5030), Duration::from_millis(12)),
            "the estimate faded"
        );
    }

    #[test]
    fn writes_directly_while_publications_leave_room_and_queues_when_they_do_not() {
        let start = Instant::now();
        let mut pace = Pace::default();
        assert!(pace.direct(start), "the first publication");
        pace.took(start, Duration::from_millis(30));
        let at = |ms| start + Duration::from_millis(ms);
        assert!(
            pace.direct(at(100)),
            "100 ms apart: room for a 30 ms fan-out"
        );
        assert!(!pace.direct(at(120)), "20 ms apart: the writers coalesce");
        assert!(
            !pace.direct(at(150)),
            "30 ms apart: not 1.2x the 30 ms it took"
        );
        assert!(pace.direct(at(250)), "publications slowed down again");
    }

    #[test]
    fn a_slow_fan_out_is_measured_again_after_a_few_seconds() {
        let start = Instant::now();
        let mut pace = Pace::default();
        assert!(pace.direct(start));
        // One fan-out took far longer than usual: the thread was descheduled.
        pace.took(start, Duration::from_millis(500));
        let queued = (1..100)
            .take_while(|n| !pace.direct(start + Duration::from_millis(100 * n)))
            .count();
        // 600 ms (1.2 x 500) fades below 100 ms after 2.6 s.
        assert!(
            (20..32).contains(&queued),
            "{queued} publications 100 ms apart queued before a direct fan-out"
        );
    }
}
