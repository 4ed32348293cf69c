//! Sequence-number arithmetic and the per-direction history of length-changing rewrites.
//!
//! All comparisons are serial-number comparisons (RFC 1982) on `u32`, so everything keeps
//! working across the 2^32 wrap.

/// `a` is strictly after `b` in sequence space.
#[inline]
pub(crate) fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `a` is strictly before `b` in sequence space.
#[inline]
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
pub(crate) fn add(seq: u32, delta: i32) -> u32 {
    seq.wrapping_add(delta as u32)
}

/// Longest rewritten field text: an `EPRT` argument with an IPv6 address
/// (`|2|` + 39 + `|65535|`), or a whole line the gateway writes (`PORT ...` -> `EPRT ...`,
/// `229 ...` -> `227 ...`). The original text such a whole line replaces is as long as the
/// peer made it (up to a line, `MAX_LINE`), so `orig_len` is wider than a byte.
pub(crate) const FIELD_MAX: usize = 64;

/// One rewritten field: the original bytes at `[start, start + orig_len)` were replaced by
/// `new[..new_len]`. `before`/`after` are the cumulative deltas of the direction just before and
/// just after this rewrite. Fixed-size so the history never allocates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shift {
    pub start: u32,
    pub orig_len: u16,
    pub new_len: u8,
    pub new: [u8; FIELD_MAX],
    pub before: i32,
    pub after: i32,
}

impl Default for Shift {
    fn default() -> Self {
        Shift { start: 0, orig_len: 0, new_len: 0, new: [0; FIELD_MAX], before: 0, after: 0 }
    }
}

impl Shift {
    pub fn end(&self) -> u32 {
        self.start.wrapping_add(u32::from(self.orig_len))
    }
    pub fn new_bytes(&self) -> &[u8] {
        &self.new[..usize::from(self.new_len)]
    }
}

/// How many rewrites per direction are remembered. IPVS remembers one (the "previous delta");
/// we remember a few more so an old retransmission two rewrites back still maps exactly and is
/// rewritten again. Older than that, the oldest known delta is used (the IPVS behaviour).
pub(crate) const HISTORY: usize = 8;

/// The rewrite history of one direction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shifts {
    items: [Shift; HISTORY],
    len: usize,
    /// Delta that applies before the oldest remembered rewrite.
    base: i32,
}

impl Shifts {
    pub fn as_slice(&self) -> &[Shift] {
        &self.items[..self.len]
    }

    /// The newest rewrite as a [`crate::SeqShift`] (what a cluster peer needs).
    pub fn newest(&self) -> crate::SeqShift {
        match self.as_slice().last() {
            Some(s) => crate::SeqShift { at: s.start, before: s.before, after: s.after },
            None => crate::SeqShift { at: 0, before: self.base, after: self.base },
        }
    }

    /// A history holding only `s`: bytes after `s.at` move by `s.after`, the rest by
    /// `s.before` (a zero-length stand-in for the rewritten field, whose bytes are unknown).
    pub fn resumed(s: crate::SeqShift) -> Self {
        let mut h = Shifts { base: s.before, ..Shifts::default() };
        if s.after != s.before {
            h.items[0] = Shift { start: s.at, before: s.before, after: s.after, ..Shift::default() };
            h.len = 1;
        }
        h
    }

    /// Maps every number to itself: no rewrite remembered and no delta before them.
    pub fn is_identity(&self) -> bool {
        self.len == 0 && self.base == 0
    }

    /// Current delta: applies to every byte after the newest rewrite.
    pub fn current(&self) -> i32 {
        self.as_slice().last().map_or(self.base, |s| s.after)
    }

    /// Records a rewrite of `orig_len` bytes at `start` by `new`. Rewrites are recorded in
    /// stream order, so the history stays sorted by `start`.
    pub fn push(&mut self, start: u32, orig_len: usize, new: &[u8]) {
        debug_assert!(orig_len <= crate::MAX_LINE && new.len() <= FIELD_MAX);
        let before = self.current();
        let mut s = Shift {
            start,
            orig_len: orig_len as u16,
            new_len: new.len() as u8,
            before,
            after: before.wrapping_add(new.len() as i32 - orig_len as i32),
            ..Shift::default()
        };
        s.new[..new.len()].copy_from_slice(new);
        if self.len == HISTORY {
            self.base = self.items[0].after;
            self.items.copy_within(1.., 0);
            self.len -= 1;
        }
        self.items[self.len] = s;
        self.len += 1;
    }

    /// Maps the original sequence number of a segment's first byte to the translated one: the
    /// delta of the newest rewrite that starts strictly before `seq` applies (a segment that
    /// starts exactly at a rewritten field carries that field, so it still uses the delta from
    /// before it).
    #[inline]
    pub fn map_seq(&self, seq: u32) -> u32 {
        if self.len == 0 {
            // No rewrite remembered (every control connection without a 227 rewrite).
            return add(seq, self.base);
        }
        for s in self.as_slice().iter().rev() {
            if after(seq, s.start) {
                return add(seq, s.after);
            }
        }
        add(seq, self.base)
    }

    /// Maps a translated acknowledgement number back to original space. An ack that falls inside
    /// a rewritten field (the peer took part of it) is clamped to the field's start, so the
    /// sender retransmits the whole field rather than have part of it considered delivered.
    #[inline]
    pub fn unmap_ack(&self, ack: u32) -> u32 {
        if self.len == 0 {
            return add(ack, self.base.wrapping_neg());
        }
        for s in self.as_slice().iter().rev() {
            let t_end = add(s.end(), s.after);
            if !before(ack, t_end) {
                return add(ack, s.after.wrapping_neg());
            }
            let t_start = add(s.start, s.before);
            if after(ack, t_start) {
                return s.start;
            }
        }
        add(ack, self.base.wrapping_neg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_compare_wraps() {
        assert!(after(1, u32::MAX));
        assert!(before(u32::MAX, 1));
        assert!(!after(5, 5) && !before(5, 5));
        assert!(after(0x8000_0000 - 1, 0));
    }

    #[test]
    fn resumed_history_maps_as_the_newest_rewrite() {
        let mut h = Shifts::default();
        h.push(1000, 20, b"10,98,0,1,7,208"); // -5
        h.push(2000, 20, b"10,98,0,1,7,2"); // -7 more: -12
        let r = Shifts::resumed(h.newest());
        assert_eq!(h.newest(), crate::SeqShift { at: 2000, before: -5, after: -12 });
        for seq in [1500u32, 1999, 2000, 2001, 2020, 2021, 9000] {
            assert_eq!(r.map_seq(seq), h.map_seq(seq), "seq {seq}");
        }
        // Acks past the newest field (all that follow a failover) map back the same.
        for ack in [2008u32, 2009, 5000] {
            assert_eq!(r.unmap_ack(ack), h.unmap_ack(ack), "ack {ack}");
        }
        assert_eq!(r.unmap_ack(1500), 1505);
        // No rewrite at all: nothing moves.
        let z = Shifts::resumed(Shifts::default().newest());
        assert_eq!((z.map_seq(7), z.unmap_ack(7)), (7, 7));
    }

    #[test]
    fn map_and_unmap_with_wrap() {
        let mut h = Shifts::default();
        let start = u32::MAX - 3;
        h.push(start, 8, b"10,0,0,100"); // +2, field spans the wrap
        assert_eq!(h.map_seq(start), start);
        assert_eq!(h.map_seq(start.wrapping_sub(100)), start.wrapping_sub(100));
        assert_eq!(h.map_seq(start.wrapping_add(8)), start.wrapping_add(10));
        assert_eq!(h.unmap_ack(start.wrapping_add(10)), start.wrapping_add(8));
        assert_eq!(h.unmap_ack(start), start);
        assert_eq!(h.unmap_ack(start.wrapping_add(5)), start);
        h.push(start.wrapping_add(50), 10, b"1,1,1,1,1,1"); // +1
        assert_eq!(h.map_seq(start.wrapping_add(20)), start.wrapping_add(22));
        assert_eq!(h.map_seq(start.wrapping_add(60)), start.wrapping_add(63));
        assert_eq!(h.unmap_ack(start.wrapping_add(63)), start.wrapping_add(60));
        assert_eq!(h.unmap_ack(start.wrapping_add(22)), start.wrapping_add(20));
    }

    #[test]
    fn eviction_keeps_base() {
        let mut h = Shifts::default();
        for i in 0..(HISTORY as u32 + 3) {
            h.push(i * 100, 7, b"12345678"); // +1 each
        }
        assert_eq!(h.current(), HISTORY as i32 + 3);
        // Far past: the oldest remembered "before" delta (IPVS-like fallback).
        assert_eq!(h.map_seq(1), 1 + 3);
        assert_eq!(h.map_seq(10_000), 10_000 + HISTORY as u32 + 3);
    }
}
