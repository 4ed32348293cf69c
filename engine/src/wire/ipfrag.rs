//! IPv4 output fragmentation (RFC 791 section 3.2, "Fragmentation and reassembly"), as
//! Linux's `ip_do_fragment` does for a forwarded packet: a packet whose sender allowed
//! fragmentation (DF clear) and that does not fit the egress MTU once rewritten or
//! encapsulated goes out as fragments instead of being dropped (IPVS's
//! `ensure_mtu_is_adequate` only refuses a packet with DF set; the kernel's output path
//! fragments the others).
//!
//! Every fragment carries a copy of the packet's header (its Ethernet header too: the frame
//! is cut after the rewrite) and a piece of its data, a multiple of 8 bytes but the last; its
//! fragment offset is the packet's own offset plus the piece's, MF is set on all but the last,
//! which keeps the packet's MF (a fragment cut again stays a middle fragment), and its total
//! length and header checksum are its own. Options are kept whole in the first fragment;
//! later ones replace those without the "copied" flag with NOPs, keeping the header's length
//! (Linux's `ip_options_fragment`), so every fragment has the same header length.
//!
//! Pure and allocation-free: [`plan`] checks the packet and says how it is cut, the caller
//! finds a buffer per later fragment and has [`Plan::write`] fill it, then turns the packet
//! itself into the first fragment ([`Plan::first_in_place`]).

use crate::wire::csum;
use crate::wire::view::{Ipv4, Truncated, IPV4_DF};

/// The "more fragments" flag of the IPv4 flags / fragment offset word.
pub const IPV4_MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units) in the same word.
const OFFSET: u16 = 0x1fff;

/// Why a packet over the MTU cannot be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// Not an IPv4 header, lengths that do not hold, options whose lengths run past the
    /// header, or a datagram that would end past 65535 bytes.
    Malformed,
    /// DF set: its sender asked for an error instead.
    DontFragment,
    /// The MTU leaves less than 8 bytes of data after the header.
    MtuTooSmall,
}

/// How one IPv4 packet is cut ([`plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    l3: usize,
    /// Header length (options included), the same in every fragment.
    hlen: usize,
    /// Data bytes of the packet (after its header).
    data: usize,
    /// Data bytes of every fragment but the last (a multiple of 8).
    chunk: usize,
    /// The packet's flags / fragment offset word.
    frag: u16,
}

/// How the IPv4 packet at `frame[l3..]` is cut into fragments of at most `mtu` bytes each:
/// `Ok(None)` if it fits as it is. Trailing bytes after its total length (Ethernet padding)
/// belong to no fragment.
pub fn plan(frame: &[u8], l3: usize, mtu: usize) -> Result<Option<Plan>, Unfit> {
    let h = Ipv4::at(frame, l3).map_err(|_| Unfit::Malformed)?;
    let (hlen, total, frag) = (h.header_len(), h.total_len() as usize, h.frag_word());
    if h.version_ihl() >> 4 != 4 || hlen < 20 || total < hlen || l3 + total > frame.len() {
        return Err(Unfit::Malformed);
    }
    if total <= mtu {
        return Ok(None);
    }
    if frag & IPV4_DF != 0 {
        return Err(Unfit::DontFragment);
    }
    let chunk = mtu.saturating_sub(hlen) & !7;
    if chunk == 0 {
        return Err(Unfit::MtuTooSmall);
    }
    let data = total - hlen;
    if (frag & OFFSET) as usize * 8 + data > 65535 {
        return Err(Unfit::Malformed);
    }
    // Checked once here, so that writing later fragments' headers cannot fail on them.
    walk_options(&frame[l3 + 20..l3 + hlen], |_| {})?;
    Ok(Some(Plan { l3, hlen, data, chunk, frag }))
}

/// The byte range of each option of `opts` (an IPv4 header's options) but NOPs, handed to
/// `f`: EOL ends the list, NOP is one byte, any other option says its length (at least 2,
/// inside the list, or `Malformed`).
fn walk_options(opts: &[u8], mut f: impl FnMut(std::ops::Range<usize>)) -> Result<(), Unfit> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            _ => {
                let len = *opts.get(i + 1).ok_or(Unfit::Malformed)? as usize;
                if len < 2 || i + len > opts.len() {
                    return Err(Unfit::Malformed);
                }
                f(i..i + len);
                i += len;
            }
        }
    }
    Ok(())
}

impl Plan {
    /// Number of fragments (at least 2).
    pub fn count(&self) -> usize {
        self.data.div_ceil(self.chunk)
    }

    /// Fragment `k`'s data: (start in the packet's data, length).
    fn piece(&self, k: usize) -> (usize, usize) {
        let start = k * self.chunk;
        (start, self.chunk.min(self.data.saturating_sub(start)))
    }

    /// Length of fragment `k`'s frame (Ethernet header included).
    pub fn frame_len(&self, k: usize) -> usize {
        self.l3 + self.hlen + self.piece(k).1
    }

    /// Write fragment `k` (`1..count()`) of `frame`, the packet planned, into `out`, which
    /// is [`Plan::frame_len`]`(k)` bytes long. Reads only the packet's headers and fragment
    /// `k`'s piece, so it must precede [`Plan::first_in_place`] on the same frame (which
    /// leaves the later pieces in the buffer but shortens the frame after it).
    pub fn write(&self, frame: &[u8], k: usize, out: &mut [u8]) -> Result<(), Truncated> {
        let (start, len) = self.piece(k);
        let hdr = self.l3 + self.hlen;
        if k == 0 || k >= self.count() || out.len() != hdr + len {
            return Err(Truncated);
        }
        out[..hdr].copy_from_slice(frame.get(..hdr).ok_or(Truncated)?);
        out[hdr..].copy_from_slice(frame.get(hdr + start..hdr + start + len).ok_or(Truncated)?);
        // Options without the copied flag become NOPs (checked by `plan`: the walk cannot
        // fail on the same bytes).
        let opts = &mut out[self.l3 + 20..hdr];
        let mut nop = [false; 40];
        let _ = walk_options(opts, |r| {
            if opts[r.start] & 0x80 == 0 {
                nop[r].fill(true);
            }
        });
        for (b, n) in opts.iter_mut().zip(nop) {
            if n {
                *b = 1;
            }
        }
        self.finish_header(out, k, len)
    }

    /// Turn `frame`, the packet planned, into the first fragment in place (its header; the
    /// caller cuts the frame to the returned length). After every [`Plan::write`].
    pub fn first_in_place(&self, frame: &mut [u8]) -> Result<usize, Truncated> {
        let (_, len) = self.piece(0);
        self.finish_header(frame, 0, len)?;
        Ok(self.frame_len(0))
    }

    /// Fragment `k`'s own fields in the header copied to `out`: offset, MF, total length,
    /// checksum.
    fn finish_header(&self, out: &mut [u8], k: usize, len: usize) -> Result<(), Truncated> {
        let last = k + 1 == self.count();
        let more = if last { self.frag & IPV4_MF } else { IPV4_MF };
        // Bounded by `plan`: the datagram ends within 65535 bytes.
        let offset = (self.frag & OFFSET) + (k * self.chunk / 8) as u16;
        let mut h = Ipv4::at_mut(out, self.l3)?;
        h.set_frag_word((self.frag & !(OFFSET | IPV4_MF)) | more | offset);
        h.set_total_len((self.hlen + len) as u16);
        csum::fill_ipv4(out, self.l3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::{reassemble, udp4, verify_checksums, vlan};

    /// `frame` cut as [`plan`] says, the way the worker does it: the later fragments written
    /// first, then the frame itself made the first.
    fn split(frame: &[u8], l3: usize, mtu: usize) -> Result<Option<Vec<Vec<u8>>>, Unfit> {
        let Some(plan) = plan(frame, l3, mtu)? else { return Ok(None) };
        let mut later = Vec::new();
        for k in 1..plan.count() {
            let mut out = vec![0; plan.frame_len(k)];
            plan.write(frame, k, &mut out).unwrap();
            later.push(out);
        }
        let mut first = frame.to_vec();
        let n = plan.first_in_place(&mut first).unwrap();
        first.truncate(n);
        Ok(Some(std::iter::once(first).chain(later).collect()))
    }

    /// A UDP datagram of `n` payload bytes (a counting pattern), DF clear.
    fn dgram(n: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let mut f = udp4([10, 0, 0, 1], 4000, [10, 0, 0, 2], 53, &payload);
        f[20] &= !0x40;
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        csum::fill_ipv4(&mut f, 14).unwrap();
        f
    }

    /// `f` with its flags / offset word set to `w`.
    fn frag_word(mut f: Vec<u8>, l3: usize, w: u16) -> Vec<u8> {
        f[l3 + 6..l3 + 8].copy_from_slice(&w.to_be_bytes());
        csum::fill_ipv4(&mut f, l3).unwrap();
        f
    }

    /// `f` (no VLAN) with IPv4 options `opts` (a multiple of 4 bytes) after its header.
    fn with_options(f: &[u8], opts: &[u8]) -> Vec<u8> {
        let mut o = f[..34].to_vec();
        o.extend_from_slice(opts);
        o.extend_from_slice(&f[34..]);
        o[14] = 0x40 | ((20 + opts.len()) / 4) as u8;
        let total = u16::from_be_bytes([o[16], o[17]]) + opts.len() as u16;
        o[16..18].copy_from_slice(&total.to_be_bytes());
        csum::fill_ipv4(&mut o, 14).unwrap();
        o
    }

    /// (offset in bytes, IP length, MF) of each fragment.
    type Layout = Vec<(usize, usize, bool)>;

    /// The [`Layout`] of `frags`.
    fn layout(frags: &[Vec<u8>], l3: usize) -> Layout {
        frags
            .iter()
            .map(|f| {
                let h = Ipv4::at(f, l3).unwrap();
                ((h.frag_word() & OFFSET) as usize * 8, h.total_len() as usize, h.frag_word() & IPV4_MF != 0)
            })
            .collect()
    }

    #[test]
    fn packets_are_cut_into_fragments_that_fit() {
        // Data: 8 (UDP header) + payload bytes.
        struct Case {
            what: &'static str,
            frame: Vec<u8>,
            l3: usize,
            mtu: usize,
            want: Result<Option<Layout>, Unfit>,
        }
        let cases = [
            Case {
                what: "two fragments, the MTU a multiple of 8 past the header",
                frame: dgram(1392),
                l3: 14,
                mtu: 1020,
                want: Ok(Some(vec![(0, 1020, true), (1000, 420, false)])),
            },
            Case {
                what: "data rounded down to 8 bytes",
                frame: dgram(1392),
                l3: 14,
                mtu: 1027,
                want: Ok(Some(vec![(0, 1020, true), (1000, 420, false)])),
            },
            Case {
                what: "an exact multiple: no empty last fragment",
                frame: dgram(1992),
                l3: 14,
                mtu: 1020,
                want: Ok(Some(vec![(0, 1020, true), (1000, 1020, false)])),
            },
            Case {
                what: "three fragments",
                frame: dgram(1400),
                l3: 14,
                mtu: 576,
                want: Ok(Some(vec![(0, 572, true), (552, 572, true), (1104, 324, false)])),
            },
            Case { what: "fits", frame: dgram(1392), l3: 14, mtu: 1420, want: Ok(None) },
            Case {
                what: "over the MTU by one byte",
                frame: dgram(1392),
                l3: 14,
                mtu: 1419,
                want: Ok(Some(vec![(0, 1412, true), (1392, 28, false)])),
            },
            Case {
                what: "DF set",
                frame: frag_word(dgram(1392), 14, IPV4_DF),
                l3: 14,
                mtu: 1000,
                want: Err(Unfit::DontFragment),
            },
            Case {
                what: "DF set, fits: nothing to cut",
                frame: frag_word(dgram(100), 14, IPV4_DF),
                l3: 14,
                mtu: 1000,
                want: Ok(None),
            },
            Case {
                what: "MTU without 8 bytes of data",
                frame: dgram(100),
                l3: 14,
                mtu: 27,
                want: Err(Unfit::MtuTooSmall),
            },
            Case {
                what: "8 bytes of data each",
                frame: dgram(16),
                l3: 14,
                mtu: 28,
                want: Ok(Some(vec![(0, 28, true), (8, 28, true), (16, 28, false)])),
            },
            Case {
                what: "a last fragment cut again: offsets after its own, the last MF clear",
                frame: frag_word(dgram(1392), 14, 100),
                l3: 14,
                mtu: 1020,
                want: Ok(Some(vec![(800, 1020, true), (1800, 420, false)])),
            },
            Case {
                what: "a middle fragment cut again: MF on every piece",
                frame: frag_word(dgram(1392), 14, IPV4_MF | 100),
                l3: 14,
                mtu: 1020,
                want: Ok(Some(vec![(800, 1020, true), (1800, 420, true)])),
            },
            Case {
                what: "past 65535 bytes once at its offset",
                frame: frag_word(dgram(1392), 14, 0x1fff),
                l3: 14,
                mtu: 1020,
                want: Err(Unfit::Malformed),
            },
            Case {
                what: "VLAN-tagged",
                frame: vlan(&dgram(1392), 7),
                l3: 18,
                mtu: 1020,
                want: Ok(Some(vec![(0, 1020, true), (1000, 420, false)])),
            },
            Case {
                what: "total length past the frame",
                frame: dgram(1392)[..1000].to_vec(),
                l3: 14,
                mtu: 576,
                want: Err(Unfit::Malformed),
            },
            Case {
                what: "bad IHL",
                frame: {
                    let mut f = dgram(1392);
                    f[14] = 0x44;
                    f
                },
                l3: 14,
                mtu: 576,
                want: Err(Unfit::Malformed),
            },
            Case {
                what: "an option running past the header",
                frame: with_options(&dgram(1392), &[0x07, 9, 4, 0]),
                l3: 14,
                mtu: 576,
                want: Err(Unfit::Malformed),
            },
            Case {
                what: "an option of length 1",
                frame: with_options(&dgram(1392), &[0x94, 1, 0, 0]),
                l3: 14,
                mtu: 576,
                want: Err(Unfit::Malformed),
            },
        ];
        for c in cases {
            let got = split(&c.frame, c.l3, c.mtu);
            let got_layout = got.as_ref().map(|o| o.as_ref().map(|fr| layout(fr, c.l3))).map_err(|e| *e);
            assert_eq!(got_layout, c.want, "{}", c.what);
            let Ok(Some(frags)) = got else { continue };
            let h = Ipv4::at(&c.frame, c.l3).unwrap();
            let (hlen, total) = (h.header_len(), h.total_len() as usize);
            let mut data = Vec::new();
            for f in &frags {
                assert!(f.len() - c.l3 <= c.mtu, "{}: a fragment over the MTU", c.what);
                assert!(crate::wire::csum::ip_header_ok(f, c.l3, false), "{}: header checksum", c.what);
                let g = Ipv4::at(f, c.l3).unwrap();
                assert_eq!(g.ident(), h.ident(), "{}: the datagram's ID", c.what);
                assert_eq!(f[..c.l3], c.frame[..c.l3], "{}: the Ethernet header", c.what);
                data.extend_from_slice(&f[c.l3 + hlen..]);
            }
            assert_eq!(data, c.frame[c.l3 + hlen..c.l3 + total], "{}: the data, in order", c.what);
        }
    }

    #[test]
    fn the_fragments_reassemble_to_the_packet() {
        for (payload, mtu) in [(1392, 1020), (1400, 576), (1992, 1500), (3, 28), (1472, 68)] {
            let f = dgram(payload);
            let frags = split(&f, 14, mtu).unwrap().unwrap();
            assert!(frags.len() >= 2);
            let whole = reassemble(&frags).expect("complete");
            assert_eq!(whole, f, "payload {payload}, MTU {mtu}");
            verify_checksums(&whole).unwrap();
        }
        // Ethernet padding after the packet goes in no fragment.
        let mut padded = dgram(1392);
        padded.extend_from_slice(&[0xee; 6]);
        let frags = split(&padded, 14, 1020).unwrap().unwrap();
        assert_eq!(reassemble(&frags).unwrap(), dgram(1392));
    }

    /// Options: the first fragment keeps them all; later ones keep those with the copied flag
    /// (here router alert, 0x94) and have NOPs where the others were (record route, 0x07), the
    /// header's length unchanged; what follows an end-of-list option is left alone.
    #[test]
    fn later_fragments_keep_only_copied_options() {
        let opts = [0x07, 3, 4, 0x94, 4, 0, 0, 1, 0, 0x44, 0, 0];
        let f = with_options(&dgram(1392), &opts);
        let frags = split(&f, 14, 1020).unwrap().unwrap();
        assert_eq!(layout(&frags, 14), [(0, 1016, true), (984, 448, false)]);
        assert_eq!(&frags[0][34..46], &f[34..46], "the first: every option");
        assert_eq!(&frags[1][34..46], &[1, 1, 1, 0x94, 4, 0, 0, 1, 0, 0x44, 0, 0], "later: NOPs for the others");
        for g in &frags {
            assert_eq!(g[14], 0x48, "IHL 8 in every fragment");
            assert!(crate::wire::csum::ip_header_ok(g, 14, false));
        }
        let data: Vec<u8> = frags.iter().flat_map(|g| g[46..].to_vec()).collect();
        assert_eq!(data, f[46..]);
    }

    #[test]
    fn write_refuses_a_wrong_fragment_or_buffer() {
        let f = dgram(1392);
        let plan = plan(&f, 14, 1020).unwrap().unwrap();
        assert_eq!(plan.count(), 2);
        let mut out = vec![0; plan.frame_len(1)];
        assert_eq!(plan.write(&f, 0, &mut out), Err(Truncated), "the first is made in place");
        assert_eq!(plan.write(&f, 2, &mut out), Err(Truncated), "past the last");
        assert_eq!(plan.write(&f, 1, &mut out[1..]), Err(Truncated));
        assert_eq!(plan.write(&f[..1000], 1, &mut out), Err(Truncated));
        assert_eq!(plan.write(&f, 1, &mut out), Ok(()));
    }

    proptest::proptest! {
        /// Any bytes, any header offset and MTU: [`plan`] and the writes it allows never panic,
        /// and what it cuts fits the MTU (the header and one 8-byte piece at least).
        #[test]
        fn any_frame_is_planned_and_cut_without_panic(
            frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600),
            l3 in 0usize..40,
            mtu in 0usize..1600,
        ) {
            if let Ok(Some(p)) = plan(&frame, l3, mtu) {
                proptest::prop_assert!(p.count() >= 2);
                for k in 1..p.count() {
                    let mut out = vec![0; p.frame_len(k)];
                    proptest::prop_assert_eq!(p.write(&frame, k, &mut out), Ok(()));
                    proptest::prop_assert!(out.len() - l3 <= mtu, "fragment {} of {} bytes over {}", k, out.len() - l3, mtu);
                }
                let mut first = frame.clone();
                let n = p.first_in_place(&mut first).unwrap();
                proptest::prop_assert!(n - l3 <= mtu);
            }
        }

        /// A datagram of any size (with or without options, itself a first fragment or not),
        /// cut at any MTU that leaves room for data: every fragment fits, checksums hold, and
        /// the fragments reassemble to the packet.
        #[test]
        fn datagrams_reassemble_from_their_fragments(
            payload in 0usize..4000,
            mtu in 68usize..1600,
            opts in 0usize..3,
            mf in proptest::prelude::any::<bool>(),
        ) {
            let opts: &[u8] = [&[][..], &[0x94, 4, 0, 0][..], &[0x07, 7, 4, 0, 0, 0, 0, 0x94, 4, 0, 0, 0][..]][opts];
            let f = with_options(&dgram(payload), opts);
            let f = if mf { frag_word(f, 14, IPV4_MF) } else { f };
            match split(&f, 14, mtu).unwrap() {
                None => proptest::prop_assert!(f.len() - 14 <= mtu),
                Some(frags) => {
                    for g in &frags {
                        proptest::prop_assert!(g.len() - 14 <= mtu);
                        proptest::prop_assert!(crate::wire::csum::ip_header_ok(g, 14, false));
                    }
                    let last = frags.last().unwrap();
                    proptest::prop_assert_eq!(Ipv4::at(last, 14).unwrap().frag_word() & IPV4_MF != 0, mf);
                    if opts.is_empty() && !mf {
                        proptest::prop_assert_eq!(reassemble(&frags).expect("complete"), f.clone());
                    }
                    let data: usize = frags.iter().map(|g| g.len() - 14 - 20 - opts.len()).sum();
                    proptest::prop_assert_eq!(data, f.len() - 14 - 20 - opts.len());
                }
            }
        }
    }
}
