//! A token bucket for log lines (and anything else) triggered by packets.
//!
//! Driven entirely by the `now` (ns) the caller passes in: no clock reads,
//! so the worker stays deterministic under replay and tests. Like the
//! kernel's `net_ratelimit()` (a burst of 10, then 1 message per 5 s by
//! default) it lets a burst through, then a steady rate, and counts what it
//! suppressed so the next message that passes can say how many were
//! dropped.
//!
//! ```
//! use ferrovs_engine::pipeline::ratelimit::RateLimit;
//! let mut rl = RateLimit::new(1, 2); // 1 per second, bursts of 2
//! assert!(rl.allow(0) && rl.allow(0));
//! assert!(!rl.allow(0));
//! assert_eq!(rl.take_suppressed(), 1);
//! assert!(rl.allow(1_000_000_000));
//! ```

const NS: u64 = 1_000_000_000;

/// Token bucket: `per_sec` tokens per second, at most `burst` stored.
#[derive(Clone, Debug)]
pub struct RateLimit {
    /// Nanoseconds per token.
    interval: u64,
    /// Capacity in nanoseconds' worth of tokens (`burst * interval`).
    cap: u64,
    /// Stored credit, in nanoseconds' worth of tokens.
    credit: u64,
    /// `now` of the last refill; `None` before the first call.
    last: Option<u64>,
    suppressed: u64,
}

impl RateLimit {
    /// `per_sec` events per second (at least 1 per ~584 years: 0 is taken
    /// as "never refill"), bursts of `burst` (at least 1). Starts full.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let interval = if per_sec == 0 { u64::MAX } else { NS / u64::from(per_sec) }.max(1);
        Self::with_interval(interval, burst)
    }

    /// One event per `interval_ns`, bursts of `burst`.
    pub fn with_interval(interval_ns: u64, burst: u32) -> Self {
        let interval = interval_ns.max(1);
        let cap = interval.saturating_mul(u64::from(burst.max(1)));
        RateLimit { interval, cap, credit: cap, last: None, suppressed: 0 }
    }

    /// The kernel's `net_ratelimit()` defaults: 10 messages, then one per 5 s.
    pub fn net_default() -> Self {
        Self::with_interval(5 * NS, 10)
    }

    /// May an event happen at `now`? Consumes a token if so; otherwise
    /// counts the event as suppressed. A clock going backwards refills
    /// nothing (and is not an error).
    pub fn allow(&mut self, now: u64) -> bool {
        let elapsed = match self.last {
            Some(l) => now.saturating_sub(l),
            None => 0,
        };
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        self.credit = self.credit.saturating_add(elapsed).min(self.cap);
        if self.credit >= self.interval {
            self.credit -= self.interval;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Events suppressed since the last call (then reset to 0): log it with
    /// the next message that is allowed.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// Events suppressed so far (not reset).
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::net_default()
    }
}

/// One token bucket per address, for what one host may trigger (Linux's per-peer
/// `icmp_ratelimit`, kept in its inetpeer cache; a service's `source_conn_rate`): a host
/// that floods cannot take what the worker's global bucket leaves for every other host.
///
/// Bounded: a table of [`HostLimit::SLOTS`] buckets in sets of [`HostLimit::WAYS`], the set
/// chosen by a keyed hash of the address (a random key per table, so no one can aim at
/// another host's set). A host new to its set takes the slot whose bucket holds the most
/// credit once refilled: an empty one, else a full bucket (which forgets nothing: a host
/// coming back gets a full one anyway), else the least limited. So a host over its limit
/// keeps its debt while any number of other hosts come and go, unless every slot of its
/// set is in debt too (more than `SLOTS` hosts limited at once); then the newcomer gets a
/// full bucket and the evicted host one when it comes back: more let through, never less,
/// and the global bucket still bounds the total. The table is allocated on the first event,
/// so a worker that never limits anything keeps no memory.
#[derive(Clone, Debug)]
pub struct HostLimit {
    /// Nanoseconds per token; `u64::MAX`: off (every host allowed).
    interval: u64,
    /// Capacity in nanoseconds' worth of tokens.
    cap: u64,
    seed: u64,
    /// (address, stored credit, `now` of the last refill); credit `u64::MAX`: an empty slot.
    slots: Vec<(u128, u64, u64)>,
}

impl HostLimit {
    /// Buckets in the table (4,096 hosts limited at once, 128 KiB).
    pub const SLOTS: usize = 4096;
    /// Buckets per set.
    pub const WAYS: usize = 4;

    /// `per_sec` events per host and second, bursts of `burst` (at least 1); `per_sec` 0: no
    /// per-host limit. `seed`: the hash key (nonzero).
    pub fn new(per_sec: u32, burst: u32, seed: u64) -> Self {
        let interval = if per_sec == 0 { u64::MAX } else { (NS / u64::from(per_sec)).max(1) };
        let cap = interval.saturating_mul(u64::from(burst.max(1)));
        HostLimit { interval, cap, seed: seed | 1, slots: Vec::new() }
    }

    /// The credit of a slot's bucket refilled to `now` (an empty slot: `u64::MAX`, the most).
    fn credit_at(&self, slot: &(u128, u64, u64), now: u64) -> u64 {
        if slot.1 == u64::MAX {
            return u64::MAX;
        }
        slot.1.saturating_add(now.saturating_sub(slot.2)).min(self.cap)
    }

    /// May `host` trigger an event at `now`? Consumes one of its tokens if so.
    pub fn allow(&mut self, now: u64, host: u128) -> bool {
        if self.interval == u64::MAX {
            return true;
        }
        if self.slots.is_empty() {
            self.slots = vec![(0, u64::MAX, 0); Self::SLOTS];
        }
        let x = (host as u64 ^ (host >> 64) as u64 ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let set = (x >> 52) as usize % (Self::SLOTS / Self::WAYS) * Self::WAYS;
        let ways = set..set + Self::WAYS;
        let i = match self.slots[ways.clone()].iter().position(|s| s.1 != u64::MAX && s.0 == host) {
            Some(w) => set + w,
            None => {
                // The victim: the most credit (the first of equals).
                let mut v = set;
                let mut most = self.credit_at(&self.slots[set], now);
                for j in ways.skip(1) {
                    let c = self.credit_at(&self.slots[j], now);
                    if c > most {
                        (v, most) = (j, c);
                    }
                }
                self.slots[v] = (host, self.cap, now);
                v
            }
        };
        let slot = &mut self.slots[i];
        // A clock going backwards refills nothing.
        let elapsed = now.saturating_sub(slot.2);
        slot.2 = slot.2.max(now);
        slot.1 = slot.1.saturating_add(elapsed).min(self.cap);
        if slot.1 >= self.interval {
            slot.1 -= self.interval;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let mut rl = RateLimit::new(10, 5);
        let passed = (0..100).filter(|_| rl.allow(0)).count();
        assert_eq!(passed, 5, "the burst");
        assert_eq!(rl.suppressed(), 95);
        // One second later: 10 more tokens, but the bucket holds 5.
        let passed = (0..100).filter(|_| rl.allow(NS)).count();
        assert_eq!(passed, 5);
        // A steady stream at 100/s for 10 s lets 10/s through (plus nothing stored).
        let mut n = 0;
        for i in 1..=1000u64 {
            if rl.allow(NS + i * NS / 100) {
                n += 1;
            }
        }
        assert!((99..=101).contains(&n), "{n}");
    }

    #[test]
    fn suppressed_is_reported_once() {
        let mut rl = RateLimit::with_interval(NS, 1);
        assert!(rl.allow(5));
        assert!(!rl.allow(6));
        assert!(!rl.allow(7));
        assert_eq!(rl.take_suppressed(), 2);
        assert_eq!(rl.take_suppressed(), 0);
        assert!(rl.allow(5 + NS));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut rl = RateLimit::with_interval(NS, 1);
        assert!(rl.allow(10 * NS));
        assert!(!rl.allow(3 * NS), "no refill from the past");
        assert!(!rl.allow(10 * NS), "and the past does not move `last` back");
        assert!(rl.allow(11 * NS));
    }

    #[test]
    fn one_host_cannot_take_another_hosts_tokens() {
        let mut hl = HostLimit::new(2, 3, 0x1234);
        let (a, b) = (0xffff_0a00_0102u128, 0xffff_0a00_0103u128);
        assert_eq!((0..50).filter(|_| hl.allow(0, a)).count(), 3, "a's burst");
        assert!(hl.allow(0, b), "b keeps its own");
        assert_eq!((0..50).filter(|_| hl.allow(0, b)).count(), 2, "the rest of b's burst");
        // Half a second later: one token each (2 per second).
        assert_eq!((0..50).filter(|_| hl.allow(NS / 2, a)).count(), 1);
        assert!(!hl.allow(NS / 4, a), "the past refills nothing");
        // Many other hosts come and go: never fewer than a bucket each.
        for h in 0..20_000u128 {
            assert!(hl.allow(NS, 0x2000_0000 + h));
        }
    }

    /// A host over its limit stays limited while many other hosts come and go (a busy
    /// service's clients, a spoofing flood): they take the table's slots of hosts whose
    /// buckets are full (which forget nothing) before the slot of one in debt. One host
    /// trying 100 times a millisecond for 2 s, between 40 other hosts a millisecond (80,000
    /// in all, 20 times the table): no more than its burst and rate.
    #[test]
    fn a_limited_host_stays_limited_among_many_others() {
        let (rate, burst) = (10u32, 5u32);
        let mut hl = HostLimit::new(rate, burst, 0x5eed);
        let abuser = 0xffff_c633_6401u128;
        let mut allowed = 0;
        let mut others = 0u128;
        for ms in 0..2000u64 {
            let now = ms * (NS / 1000);
            for _ in 0..40 {
                others += 1;
                assert!(hl.allow(now, 0xffff_0a00_0000 + others), "a new host has its bucket");
            }
            allowed += (0..100).filter(|_| hl.allow(now, abuser)).count();
        }
        // The burst, then 10 a second for 2 s (the first token at 100 ms).
        let most = burst as usize + 2 * rate as usize;
        assert!(allowed <= most, "{allowed} allowed, at most {most}");
        assert!(allowed >= most - 1, "{allowed} allowed, at least {}", most - 1);
    }

    #[test]
    fn host_limit_zero_is_off() {
        let mut hl = HostLimit::new(0, 1, 7);
        assert!((0..10_000).all(|i| hl.allow(0, i % 3)));
        assert!(hl.slots.is_empty(), "nothing allocated");
    }

    #[test]
    fn net_default_is_ten_then_one_per_five_seconds() {
        let mut rl = RateLimit::default();
        assert_eq!((0..50).filter(|_| rl.allow(0)).count(), 10);
        assert!(!rl.allow(4 * NS));
        assert!(rl.allow(5 * NS));
        assert!(!rl.allow(5 * NS));
    }
}
