//! A small, bounds-checked TCP options walker and the two rewrites the FTP
//! gateway needs on its control connections: MSS clamping at the handshake
//! and mapping SACK block edges after a length-changing rewrite.
//!
//! Everything works on the options area only (`tcp[20..data_offset*4]`),
//! a slice of at most 40 bytes, and never reads or writes outside it:
//! a truncated or garbled option ends the walk (like Linux's
//! `tcp_parse_options`, which stops at a length < 2 or past the end), so
//! arbitrary bytes (a fuzzer's) are safe. Callers fix the TCP checksum;
//! [`csum_delta`] gives the RFC 1624 delta between two copies of the area.

use crate::wire::csum;

/// End of option list.
pub const EOL: u8 = 0;
/// No-operation (padding).
pub const NOP: u8 = 1;
/// Maximum segment size (RFC 9293), length 4.
pub const MSS: u8 = 2;
/// Window scale (RFC 7323), length 3.
pub const WSCALE: u8 = 3;
/// SACK permitted (RFC 2018), length 2.
pub const SACK_PERM: u8 = 4;
/// SACK blocks (RFC 2018, D-SACK RFC 2883), length 2 + 8n.
pub const SACK: u8 = 5;
/// Timestamps (RFC 7323), length 10.
pub const TIMESTAMP: u8 = 8;

/// Longest options area (data offset 15 words).
pub const MAX_LEN: usize = 40;

/// One option found by [`walk`]: its kind and where it lies in the area
/// (`off` is the kind byte; `len` counts kind and length bytes; 1 for
/// NOP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opt {
    pub kind: u8,
    pub off: usize,
    pub len: usize,
}

/// Iterator over the options of an options area. Stops at EOL, at the end,
/// or at the first malformed option (length < 2 or past the end).
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
}

/// Walk the options area `opts`.
pub fn walk(opts: &[u8]) -> Walk<'_> {
    Walk { b: opts, pos: 0 }
}

impl Iterator for Walk<'_> {
    type Item = Opt;
    fn next(&mut self) -> Option<Opt> {
        let kind = *self.b.get(self.pos)?;
        let off = self.pos;
        match kind {
            EOL => {
                self.pos = self.b.len();
                None
            }
            NOP => {
                self.pos += 1;
                Some(Opt { kind, off, len: 1 })
            }
            _ => {
                let len = *self.b.get(off + 1)? as usize;
                if len < 2 || off + len > self.b.len() {
                    self.pos = self.b.len();
                    return None;
                }
                self.pos = off + len;
                Some(Opt { kind, off, len })
            }
        }
    }
}

/// The MSS option's value, if there is a well-formed one.
pub fn mss(opts: &[u8]) -> Option<u16> {
    walk(opts).find(|o| o.kind == MSS && o.len == 4).map(|o| u16::from_be_bytes([opts[o.off + 2], opts[o.off + 3]]))
}

/// Lower every well-formed MSS option above `max` to `max` (like Linux's
/// `TCPMSS --set-mss`, which only ever lowers). Returns the old value of the
/// first option changed, or None if nothing changed.
pub fn clamp_mss(opts: &mut [u8], max: u16) -> Option<u16> {
    let mut changed = None;
    let found: [Option<Opt>; MAX_LEN / 4] = {
        let mut a = [None; MAX_LEN / 4];
        for (slot, o) in a.iter_mut().zip(walk(opts).filter(|o| o.kind == MSS && o.len == 4)) {
            *slot = Some(o);
        }
        a
    };
    for o in found.into_iter().flatten() {
        let v = u16::from_be_bytes([opts[o.off + 2], opts[o.off + 3]]);
        if v > max {
            opts[o.off + 2..o.off + 4].copy_from_slice(&max.to_be_bytes());
            changed.get_or_insert(v);
        }
    }
    changed
}

/// Map every SACK block (D-SACK included: it is just the first block),
/// `(left, right)` -> `f(left, right)`. Options whose length is not 2 + 8n
/// are left alone (Linux ignores them too). Returns whether any byte
/// changed.
pub fn map_sack(opts: &mut [u8], mut f: impl FnMut(u32, u32) -> (u32, u32)) -> bool {
    let mut changed = false;
    let mut pos = 0;
    // Re-walk from `pos` each time: the walk borrows `opts` immutably.
    while let Some(o) = walk(&opts[pos..]).find(|o| o.kind == SACK) {
        let (off, len) = (pos + o.off, o.len);
        pos = off + len;
        if (len - 2) % 8 != 0 {
            continue;
        }
        for b in (off + 2..off + len).step_by(8) {
            let rd = |e: usize| u32::from_be_bytes([opts[e], opts[e + 1], opts[e + 2], opts[e + 3]]);
            let old = (rd(b), rd(b + 4));
            let new = f(old.0, old.1);
            if new != old {
                opts[b..b + 4].copy_from_slice(&new.0.to_be_bytes());
                opts[b + 4..b + 8].copy_from_slice(&new.1.to_be_bytes());
                changed = true;
            }
        }
    }
    changed
}

/// RFC 1624 delta between two copies of an options area that starts at an
/// even offset of the TCP header (it always does: offset 20). Lengths must
/// be equal; an odd length is padded with a zero byte.
pub fn csum_delta(old: &[u8], new: &[u8]) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    let n = old.len() & !1;
    let mut d = csum::delta(&old[..n], &new[..n]);
    if old.len() > n {
        d = csum::add(d, csum::delta16(u16::from(old[n]) << 8, u16::from(new[n]) << 8));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typical Linux SYN: MSS 1460, SACK_PERM, TS, NOP, WS 7.
    const SYN: [u8; 20] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

    #[test]
    fn walks_a_linux_syn() {
        let kinds: Vec<u8> = walk(&SYN).map(|o| o.kind).collect();
        assert_eq!(kinds, vec![MSS, SACK_PERM, TIMESTAMP, NOP, WSCALE]);
        assert_eq!(mss(&SYN), Some(1460));
    }

    #[test]
    fn clamps_only_downwards() {
        let mut o = SYN;
        assert_eq!(clamp_mss(&mut o, 1448), Some(1460));
        assert_eq!(mss(&o), Some(1448));
        assert_eq!(clamp_mss(&mut o, 1460), None, "never raised");
        assert_eq!(mss(&o), Some(1448));
        assert_eq!(o[4..], SYN[4..], "other options untouched");
    }

    #[test]
    fn maps_sack_edges_and_dsack() {
        // NOP NOP TS(10) NOP NOP SACK with 2 blocks (the first a D-SACK).
        let mut o = vec![1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 1, 5, 18];
        for v in [100u32, 110, 300, 400] {
            o.extend_from_slice(&v.to_be_bytes());
        }
        let before = o.clone();
        assert!(map_sack(&mut o, |l, r| (l - 2, r - 2)));
        let edges: Vec<u32> = o[16..].chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
        assert_eq!(edges, vec![98, 108, 298, 398]);
        assert_eq!(o[..16], before[..16], "timestamps untouched");
        assert!(!map_sack(&mut o, |l, r| (l, r)), "identity changes nothing");
    }

    #[test]
    fn checksum_delta_matches_full_recompute() {
        // Options at an odd position inside the area (NOP first) still fold right.
        let mut o = vec![1, 5, 10];
        o.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        o.extend_from_slice(&0x0506_0708u32.to_be_bytes());
        o.push(0);
        let old = o.clone();
        map_sack(&mut o, |l, r| (l.wrapping_add(0x0101_0101), r.wrapping_add(0x0101_0101)));
        let full_old = csum::finish(&old, 0);
        let full_new = csum::finish(&o, 0);
        assert_eq!(csum::apply(full_old, csum_delta(&old, &o)), full_new);
    }

    #[test]
    fn garbage_ends_the_walk_never_panics() {
        for opts in [&[2u8][..], &[2, 0], &[2, 1, 0], &[5, 200, 0, 0], &[3, 3], &[8, 10, 1]] {
            let mut o = opts.to_vec();
            let _ = walk(&o).count();
            assert_eq!(clamp_mss(&mut o, 1), None);
            map_sack(&mut o, |l, r| (l + 1, r + 1));
        }
        // Exhaustive over short areas.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let mut o = [a, b, 5, 10, 0, 0, 0, 1, 0, 0];
                let _ = walk(&o).count();
                clamp_mss(&mut o, 100);
                map_sack(&mut o, |l, r| (l ^ 1, r ^ 1));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_safe(mut o in proptest::collection::vec(proptest::num::u8::ANY, 0..=MAX_LEN), m in 0u16..2000) {
            let before = o.clone();
            for opt in walk(&o) {
                proptest::prop_assert!(opt.off + opt.len <= o.len() && opt.len >= 1);
            }
            proptest::prop_assert!(!map_sack(&mut o, |l, r| (l, r)));
            proptest::prop_assert_eq!(&o, &before);
            let old_mss = mss(&o);
            clamp_mss(&mut o, m);
            if let (Some(a), Some(b)) = (old_mss, mss(&o)) {
                proptest::prop_assert!(b <= a && (b <= m || a <= m));
            }
            map_sack(&mut o, |l, r| (r, l));
            proptest::prop_assert_eq!(o.len(), before.len());
        }
    }

    #[test]
    fn malformed_sack_length_left_alone() {
        let mut o = [5u8, 6, 0, 0, 0, 1];
        assert!(!map_sack(&mut o, |l, r| (l + 1, r + 1)));
    }
}
