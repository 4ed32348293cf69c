//! PROXY protocol towards a real server ([`crate::pipeline::proxyproto`]): the header in front of
//! the client's first segment, and the sequence shift for the rest of the connection.

use super::*;

impl<Q: BufAlloc> Worker<Q> {
    /// PROXY protocol on a segment of connection `idx` (see [`crate::pipeline::proxyproto`]): the
    /// client's SYN gives the stream start; a client segment at the start gets the header in
    /// front of its payload, later ones are shifted by its length; the server's
    /// acknowledgements (and SACK edges) are shifted back and its SYN-ACK's MSS lowered.
    /// `Ok(Some(p))`: the frame changed shape, `p` is its new parse.
    pub(super) fn pp_segment(
        &mut self,
        idx: u32,
        dir: Dir,
        pkt: &mut Q::Buf,
        p: &Parsed,
    ) -> Result<Option<Parsed>, Next> {
        let Some(mut pp) = self.flows.cold(idx).pp.as_deref().copied() else { return Ok(None) };
        if p.proto != PROTO_TCP {
            return Ok(None);
        }
        let l4 = p.l4;
        let field = |d: &[u8], off: usize| u32::from_be_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]);
        let opts_end = (l4 + ((pkt.data()[l4 + 12] >> 4) as usize) * 4).min(p.payload);
        let mut reparsed = None;
        match dir {
            Dir::In => {
                let seq = field(pkt.data(), l4 + 4);
                if p.tcp_flags & TCP_SYN != 0 {
                    pp.isn = seq;
                    pp.known = true;
                } else if pp.known && seq == pp.start() && !(pp.acked && p.payload_len() == 0) {
                    // The header goes in front of this segment's payload.
                    let h = pp.delta() as usize;
                    let mtu =
                        self.caps.get(self.flows.if_in(self.flows.get(idx)) as usize).map_or(1500, |c| c.mtu as usize);
                    if p.end - p.l3 + h > mtu.max(576) {
                        return Err(Next::Drop(DropReason::TooBig));
                    }
                    let end = p.end;
                    if !pkt.set_len(end + h) {
                        return Err(Next::Drop(DropReason::NoBuffer));
                    }
                    let d = pkt.data_mut();
                    d.copy_within(p.payload..end, p.payload + h);
                    d[p.payload..p.payload + h].copy_from_slice(pp.header());
                    if p.v6 {
                        let n = u16::from_be_bytes([d[p.l3 + 4], d[p.l3 + 5]]) as usize + h;
                        d[p.l3 + 4..p.l3 + 6].copy_from_slice(&(n as u16).to_be_bytes());
                    } else {
                        let n = u16::from_be_bytes([d[p.l3 + 2], d[p.l3 + 3]]) as usize + h;
                        d[p.l3 + 2..p.l3 + 4].copy_from_slice(&(n as u16).to_be_bytes());
                        fix_ipv4_csum(d, p.l3);
                    }
                    let Ok(p2) = parse::parse(pkt.data()) else { return Err(Next::Drop(DropReason::Malformed)) };
                    fix_l4_csum(pkt.data_mut(), &p2);
                    reparsed = Some(p2);
                } else if pp.known {
                    let new = pp.map_seq(seq);
                    if new != seq {
                        let d = pkt.data_mut();
                        d[l4 + 4..l4 + 8].copy_from_slice(&new.to_be_bytes());
                        csum::apply_at(
                            d,
                            l4 + 16,
                            csum::add(
                                csum::delta16((seq >> 16) as u16, (new >> 16) as u16),
                                csum::delta16(seq as u16, new as u16),
                            ),
                        );
                    }
                }
            }
            Dir::Out => {
                let d = pkt.data_mut();
                let mut opt_delta = 0;
                if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                    // Room for the header in the client's first full-sized segment.
                    let opts = &mut d[l4 + 20..opts_end];
                    if let Some(m) = crate::wire::tcpopt::mss(opts) {
                        let old = opts.to_vec();
                        crate::wire::tcpopt::clamp_mss(opts, m.saturating_sub(pp.delta() as u16).max(256));
                        opt_delta = crate::wire::tcpopt::csum_delta(&old, opts);
                    }
                }
                if p.tcp_flags & TCP_ACK != 0 && pp.known {
                    let ack = field(d, l4 + 8);
                    let new = pp.map_ack(ack);
                    if ack.wrapping_sub(pp.start()) >= pp.delta() && (ack.wrapping_sub(pp.start()) as i32) > 0 {
                        pp.acked = true;
                    }
                    if new != ack {
                        d[l4 + 8..l4 + 12].copy_from_slice(&new.to_be_bytes());
                        opt_delta = csum::add(
                            opt_delta,
                            csum::add(
                                csum::delta16((ack >> 16) as u16, (new >> 16) as u16),
                                csum::delta16(ack as u16, new as u16),
                            ),
                        );
                    }
                    let opts = &mut d[l4 + 20..opts_end];
                    let old = opts.to_vec();
                    if crate::wire::tcpopt::map_sack(opts, |a, b| (pp.map_ack(a), pp.map_ack(b))) {
                        opt_delta = csum::add(opt_delta, crate::wire::tcpopt::csum_delta(&old, opts));
                    }
                }
                if opt_delta != 0 {
                    csum::apply_at(d, l4 + 16, opt_delta);
                }
            }
        }
        if let Some(x) = self.flows.cold_mut(idx).pp.as_deref_mut() {
            *x = pp;
        }
        Ok(reparsed)
    }
}
