//! A per-connection token bucket for client commands. Owned by the session's reader, so
//! no atomics or locks: a few arithmetic operations per command.

use tokio::time::Instant;

/// Rejections in a row after which the connection is closed (4100).
const CLOSE_AFTER_REJECTIONS: u32 = 10;

pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
    rejected_in_a_row: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer with "too many requests".
    Reject,
    /// The client keeps going: close the connection.
    Close,
}

impl RateLimiter {
    /// `per_minute` commands a minute, with bursts up to the same number.
    pub fn per_minute(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute);
        Self {
            capacity,
            per_second: capacity / 60.0,
            tokens: capacity,
            updated: Instant::now(),
            rejected_in_a_row: 0,
        }
    }

    pub fn check(&mut self) -> Verdict {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.rejected_in_a_row = 0;
            return Verdict::Allow;
        }
        self.rejected_in_a_row += 1;
        if self.rejected_in_a_row >= CLOSE_AFTER_REJECTIONS {
            Verdict::Close
        } else {
            Verdict::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_rejects_then_closes_then_refills() {
        let mut limiter = RateLimiter::per_minute(60);
        for _ in 0..60 {
            assert_eq!(limiter.check(), Verdict::Allow);
        }
        for _ in 0..CLOSE_AFTER_REJECTIONS - 1 {
            assert_eq!(limiter.check(), Verdict::Reject);
        }
        assert_eq!(limiter.check(), Verdict::Close);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        assert_eq!(limiter.check(), Verdict::Allow);
        assert_eq!(limiter.check(), Verdict::Allow);
        assert_eq!(limiter.check(), Verdict::Reject);
    }
}
