//! TCP-level care of FTP control connections (a child module of
//! `worker`, so it sees the worker's private state): SACK edges mapped
//! with the same seq/ack deltas, the handshake MSS clamped so a rewrite
//! never outgrows the path, and a `Replace` written out — split across
//! segments when it still does not fit the egress MTU, with the FIN kept
//! on the last byte of the original segment.

use super::*;
use crate::wire::parse::{TCP_FIN, TCP_PSH};
use crate::wire::tcpopt;
use crate::wire::view::{IpMut, Tcp, Truncated, TCP_HEADER_LEN};

/// Most a single rewrite can grow a segment: a `227` address, the longest
/// text (`255,255,255,255,255,255`, [`alg::parse::MAX_227_ADDR_LEN`] = 23
/// bytes) replacing the shortest (`0,0,0,0,0,0`, 11 bytes): 12 bytes. (A
/// `229` whose port the engine moved grows by at most 4: 1 digit to 5.)
///
/// The handshake MSS of a control connection is lowered by this much
/// (Linux's `TCPMSS --clamp-mss-to-pmtu` minus the gateway's growth), so a
/// full-sized reply segment carrying one rewritten `227` still fits the
/// MTU. More growth in one segment (several `227` lines pipelined into one
/// segment, held bytes released with a full segment) is not prevented by
/// the clamp: the worker (`ftp_replace`) splits such a segment instead of
/// dropping it.
pub const ALG_MAX_GROWTH: usize = alg::parse::MAX_227_ADDR_LEN - MIN_227_ADDR_LEN;
const MIN_227_ADDR_LEN: usize = "0,0,0,0,0,0".len();

/// Linux's `TCP_MIN_MSS`: never clamp below it, whatever the MTU.
const MIN_MSS: usize = 88;

/// A `Replace` is split into at most this many segments; beyond that (an
/// MTU far below the gateway's own payload limit) it is dropped as
/// `too_big` and the peer's retransmission tries again.
const MAX_SPLIT: usize = 8;

impl<Q: BufAlloc> Worker<Q> {
    /// Largest MSS a control connection's SYN or SYN-ACK may announce:
    /// the MTU minus IP and TCP headers (RFC 6691: options are the
    /// sender's business), minus an IPIP header for tunnelled servers,
    /// minus [`ALG_MAX_GROWTH`].
    ///
    /// The MTU is the smaller of the two interfaces of the connection:
    /// the one the SYN leaves by (the real server's side for the client's
    /// SYN, `if_in`; the client's side for the SYN-ACK, `if_out`), as
    /// Linux's clamp-to-PMTU uses, and the one the data that MSS governs
    /// will leave by (the opposite side: the client's MSS sizes the
    /// server's replies, which the gateway grows and sends out of
    /// `if_out`). With DR the balancer only has `if_in`.
    pub(super) fn ftp_mss_limit(&self, idx: u32, v6: bool) -> u16 {
        let c = self.flows.get(idx);
        let mtu_of = |i: u8| self.caps.get(i as usize).map_or(1500, |c| c.mtu as usize);
        let mut mtu = mtu_of(self.flows.if_in(c));
        if c.fwd.two_way() {
            mtu = mtu.min(mtu_of(self.flows.if_out(c)));
        }
        let ip = if v6 { 40 } else { 20 };
        let tunnel = match c.fwd {
            Forward::Tunnel if addr_is_v4(self.flows.rs_of(c).0) => 20,
            Forward::Tunnel => 40,
            _ => 0,
        };
        mtu.saturating_sub(ip + 20 + tunnel + ALG_MAX_GROWTH).clamp(MIN_MSS, u16::MAX as usize) as u16
    }

    /// The gateway's payload limit for control connection `idx`
    /// (`FtpSession::set_max_payload`): a released held line plus a full
    /// segment must still fit the MTU of the side a rewritten segment
    /// leaves by (the client's for replies; the smaller of both sides, to be
    /// safe either way), less an IPv6 header and TCP with options,
    /// conservatively. What exceeds it anyway is split, see `ftp_replace`.
    pub(super) fn ftp_max_payload(&self, idx: u32) -> usize {
        let c = self.flows.get(idx);
        let mtu_of = |i: u8| self.caps.get(i as usize).map_or(1500, |c| c.mtu as usize);
        let mut mtu = mtu_of(self.flows.if_in(c));
        if c.fwd.two_way() {
            mtu = mtu.min(mtu_of(self.flows.if_out(c)));
        }
        mtu.saturating_sub(40 + 60).max(512)
    }

    /// Rewrite the TCP options of a control-connection segment in place:
    /// on SYN / SYN-ACK clamp the MSS ([`Worker::ftp_mss_limit`]); on a
    /// segment with ACK map every SACK block (D-SACK included) with
    /// [`sack_block`]. Returns the RFC 1624 checksum delta (0: nothing
    /// changed).
    #[inline(always)]
    pub(super) fn ftp_tcp_options(&mut self, idx: u32, adir: alg::Dir, pkt: &mut Q::Buf, p: &Parsed) -> u32 {
        if p.payload <= p.l4 + TCP_HEADER_LEN {
            // No options (most segments of a control connection, floods of tiny ones too).
            return 0;
        }
        self.ftp_tcp_options_present(idx, adir, pkt, p)
    }

    /// [`Worker::ftp_tcp_options`] for a segment with options.
    fn ftp_tcp_options_present(&mut self, idx: u32, adir: alg::Dir, pkt: &mut Q::Buf, p: &Parsed) -> u32 {
        let (a, b) = (p.l4 + TCP_HEADER_LEN, p.payload);
        let syn = p.tcp_flags & TCP_SYN != 0;
        let ack = p.tcp_flags & TCP_ACK != 0;
        if b <= a || b - a > tcpopt::MAX_LEN || !(syn || ack) {
            return 0;
        }
        let limit = syn.then(|| self.ftp_mss_limit(idx, p.v6));
        let Some(s) = self.flows.cold(idx).alg.as_deref() else { return 0 };
        let Some(opts) = pkt.data_mut().get_mut(a..b) else { return 0 };
        let n = opts.len();
        let mut old = [0u8; tcpopt::MAX_LEN];
        old[..n].copy_from_slice(opts);
        let mut changed = false;
        if let Some(m) = limit {
            changed |= tcpopt::clamp_mss(opts, m).is_some();
        }
        if ack && !syn {
            changed |= tcpopt::map_sack(opts, |l, r| sack_block(s, adir, l, r));
        }
        if changed {
            tcpopt::csum_delta(&old[..n], opts)
        } else {
            0
        }
    }

    /// Send `payload` (a gateway `Replace`) instead of the segment's own
    /// payload, at wire sequence `seq` with `ack`. The segment leaves by
    /// the interface of its direction (`if_in` towards the real server,
    /// `if_out` towards the client). If it does not fit that MTU it is cut
    /// into several segments with consecutive sequence numbers, all but
    /// the last in fresh buffers transmitted first (like TSO: only the last
    /// keeps PSH/FIN; only the first keeps SYN). The FIN is kept only if
    /// `keep_fin` (the Replace ends where the original segment's data
    /// ended; otherwise bytes after it are held or left for the sender's
    /// retransmission and the FIN must wait for them).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ftp_replace(
        &mut self,
        idx: u32,
        dir: Dir,
        pkt: &mut Q::Buf,
        p: &mut Parsed,
        payload: &[u8],
        seq: u32,
        ack: u32,
        keep_fin: bool,
    ) -> Result<(), Next> {
        let c = self.flows.get(idx);
        let egress = if dir == Dir::In { self.flows.if_in(c) } else { self.flows.if_out(c) } as usize;
        let tunnel = match c.fwd {
            Forward::Tunnel if addr_is_v4(self.flows.rs_of(c).0) => 20,
            Forward::Tunnel => 40,
            _ => 0,
        };
        let Some(q) = self.caps.get(egress) else {
            return Err(Next::Drop(DropReason::NoRoute));
        };
        let mtu = (q.mtu as usize).max(576) - tunnel;
        let hdr = p.payload - p.l3;
        let room = mtu.saturating_sub(hdr).min(pkt.capacity().saturating_sub(p.payload));
        if room == 0 {
            return Err(Next::Drop(DropReason::TooBig));
        }
        let pieces = payload.len().div_ceil(room).max(1);
        if pieces > MAX_SPLIT {
            return Err(Next::Drop(DropReason::TooBig));
        }
        let Ok(flags) = Tcp::at(pkt.data(), p.l4).map(|t| t.flags()) else {
            return Err(Next::Drop(DropReason::Malformed));
        };
        let syn = u32::from(flags & TCP_SYN != 0);
        // Wire sequence number of the piece starting at payload offset `off`.
        let seq_at = |off: usize| if off == 0 { seq } else { seq.wrapping_add(syn).wrapping_add(off as u32) };
        let mut off = 0;
        for k in 0..pieces - 1 {
            let Some(mut b) = self.allocs[egress].alloc() else {
                return Err(Next::Drop(DropReason::NoBuffer));
            };
            if !b.set_len(p.payload + room) {
                return Err(Next::Drop(DropReason::TooBig));
            }
            b.data_mut()[..p.payload].copy_from_slice(&pkt.data()[..p.payload]);
            let mut fl = flags & !(TCP_FIN | TCP_PSH);
            if k > 0 {
                fl &= !TCP_SYN;
            }
            let mut bp = *p;
            crate::pipeline::counters::bump(&self.counters.split_segments, 1);
            if write_segment(b.data_mut(), &mut bp, &payload[off..off + room], seq_at(off), ack, fl).is_err() {
                return Err(Next::Drop(DropReason::Malformed));
            }
            let next = self.forward_rewrite(idx, dir, &mut b, &bp);
            self.finish(b, next);
            off += room;
        }
        let last = &payload[off..];
        if !pkt.set_len(p.payload + last.len()) {
            return Err(Next::Drop(DropReason::TooBig));
        }
        let mut fl = if keep_fin { flags } else { flags & !TCP_FIN };
        if pieces > 1 {
            fl &= !TCP_SYN;
        }
        write_segment(pkt.data_mut(), p, last, seq_at(off), ack, fl).map_err(|_| Next::Drop(DropReason::Malformed))
    }
}

impl<Q: BufAlloc> Worker<Q> {
    /// Redo the TCP state transition of the segment just handled on
    /// connection `idx`, from `before`, with `flags` (what actually went out:
    /// a FIN the gateway kept back must not move the connection to
    /// FIN_WAIT/CLOSE_WAIT, shortening its timeout; the sender's
    /// retransmission carries it later), or undo it (`None`: the gateway
    /// held the whole segment, nothing went out). Keeps the active/inactive
    /// counts, the half-open count and the timeout in step (`set_tcp_state`).
    pub(super) fn redo_tcp_state(
        &mut self,
        idx: u32,
        dir: Dir,
        before: crate::flow::tcpstate::TcpState,
        flags: Option<u8>,
    ) {
        let c = self.flows.get(idx);
        let d = match (dir, c.fwd) {
            (Dir::Out, _) => Direction::Output,
            (Dir::In, f) if f.two_way() => Direction::Input,
            (Dir::In, _) => Direction::InputOnly,
        };
        let new = flags.map_or(before, |f| tcpstate::next(before, d, f));
        self.set_tcp_state(idx, new);
    }

    /// Connection `idx` into TCP state `new`, its timeout, the active/inactive counts and the
    /// half-open (SYN_RECV) count in step, as `forward::track` keeps them: every
    /// caller (an undone or redone transition, the SYN proxy's) leaves or re-enters SYN_RECV
    /// correctly counted. (A peer's backup entry counts nothing until adopted.)
    pub(super) fn set_tcp_state(&mut self, idx: u32, new: crate::flow::tcpstate::TcpState) {
        use crate::flow::tcpstate::TcpState::SynRecv;
        let (snap_gen, id, now) = (self.snap_gen, self.id, self.now);
        let c = self.flows.get_mut(idx);
        if new == c.state {
            return;
        }
        if c.flags & F_SYNCED == 0 {
            if c.state == SynRecv {
                self.half_open = self.half_open.saturating_sub(1);
            } else if new == SynRecv {
                self.half_open += 1;
            }
        }
        c.state = new;
        c.set_expires(now, now + self.timeouts[new as usize]);
        if c.snap_gen == snap_gen && c.flags & F_COUNTED != 0 {
            let Some(counts) = self.snap.conn_counts.get(c.svc as usize) else { return };
            let was = c.flags & F_ACTIVE_COUNTED != 0;
            let is = new.is_active();
            if was && !is {
                counts.dec_active(id, c.dest as usize);
                counts.inc_inactive(id, c.dest as usize);
                c.flags &= !F_ACTIVE_COUNTED;
            } else if !was && is {
                counts.dec_inactive(id, c.dest as usize);
                counts.inc_active(id, c.dest as usize);
                c.flags |= F_ACTIVE_COUNTED;
            }
        }
    }
}

/// Map a SACK block `[left, right)` of a segment travelling in `adir`:
/// it refers to the other direction's translated sequence space, as the
/// ack does, so both edges go through the ack's function,
/// `FtpSession::map_ack` (Linux `nf_nat_sack_adjust` does the same). That
/// function maps an edge inside a rewritten field to the field's start,
/// which for a right edge claims less than was received (safe) but for a
/// left edge claims more (the start of the field, which the peer may not
/// have): a left edge inside a field is moved to the field's end instead
/// (the first translated position after it that maps exactly), and a block
/// left empty by that stays empty (receivers ignore `left == right`).
fn sack_block(s: &alg::FtpSession, adir: alg::Dir, left: u32, right: u32) -> (u32, u32) {
    let other = adir.reverse();
    let exact = |t: u32| s.map_seq(other, s.map_ack(adir, t)) == t;
    let r = s.map_ack(adir, right);
    let l = if exact(left) {
        s.map_ack(adir, left)
    } else {
        // A field is at most MAX_227_ADDR_LEN bytes long once translated.
        (1..=alg::parse::MAX_227_ADDR_LEN as u32 + 1)
            .map(|k| left.wrapping_add(k))
            .find(|&t| exact(t))
            .map_or(r, |t| s.map_ack(adir, t))
    };
    // Never past the right edge (serial-number order).
    if (r.wrapping_sub(l) as i32) < 0 {
        (r, r)
    } else {
        (l, r)
    }
}

/// Write `piece` as the payload of the TCP segment at `p` (the frame is
/// already `p.payload + piece.len()` long), with `seq`, `ack` and the flags
/// byte `flags`; fix the IP length, the IPv4 header checksum and the TCP
/// checksum. `p.end` and `p.tcp_flags` follow. [`Truncated`] if the frame does not
/// hold the segment.
fn write_segment(d: &mut [u8], p: &mut Parsed, piece: &[u8], seq: u32, ack: u32, flags: u8) -> Result<(), Truncated> {
    let end = p.payload + piece.len();
    d.get_mut(p.payload..end).ok_or(Truncated)?.copy_from_slice(piece);
    let mut t = Tcp::at_mut(d, p.l4)?;
    t.set_seq(seq);
    t.set_ack(ack);
    t.set_flags(flags);
    IpMut::at_mut(d, p.l3, p.v6)?.set_packet_len((end - p.l3) as u16);
    if !p.v6 {
        csum::fill_ipv4(d, p.l3)?;
    }
    p.end = end;
    p.tcp_flags = flags & 0x3f;
    csum::fill_l4(d, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_constant_is_the_227_address_difference() {
        assert_eq!(ALG_MAX_GROWTH, 12);
        let mut long = [0u8; alg::parse::MAX_227_ADDR_LEN];
        let n = alg::parse::format_227_addr(std::net::Ipv4Addr::new(255, 255, 255, 255), 65535, &mut long);
        assert_eq!(n, 23);
        let n = alg::parse::format_227_addr(std::net::Ipv4Addr::new(0, 0, 0, 0), 0, &mut long);
        assert_eq!(n, MIN_227_ADDR_LEN);
    }
}
