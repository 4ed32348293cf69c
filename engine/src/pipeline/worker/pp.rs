//! PROXY protocol towards a real server ([`crate::pipeline::proxyproto`]): the header in front of
//! the client's first segment, and the sequence shift for the rest of the connection.

use super::*;
use crate::wire::view::{IpMut, Tcp, Truncated, TCP_HEADER_LEN};

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
        let Ok((seq, ack, hl)) = Tcp::at(pkt.data(), l4).map(|t| (t.seq(), t.ack(), t.header_len())) else {
            return Err(Next::Drop(DropReason::Malformed));
        };
        // The options (empty if the header says less than 20 bytes: the parser refuses those).
        let opts = l4 + TCP_HEADER_LEN..(l4 + hl).min(p.payload);
        let mut reparsed = None;
        match dir {
            Dir::In => {
                let syn = p.tcp_flags & TCP_SYN != 0;
                if syn {
                    pp.isn = seq;
                    pp.known = true;
                }
                // The header goes in front of the first segment at the stream start: also a
                // SYN with data (TCP Fast Open), whose payload starts there too; a server
                // taking it must not read the client's bytes as the header.
                let first = if syn {
                    p.payload_len() > 0
                } else {
                    pp.known && seq == pp.start() && !(pp.acked && p.payload_len() == 0)
                };
                if first {
                    // A fragment (the first of its datagram, the one with the TCP header): the
                    // header cannot go into one piece of a datagram, and its TCP checksum, over
                    // the whole datagram, cannot be checked here. Refused as the FTP gateway
                    // refuses a fragmented control segment (real stacks use path MTU
                    // discovery), not taken for a corrupted segment.
                    if crate::flow::frag::is_fragment(pkt.data(), p) {
                        return Err(Next::Drop(DropReason::Fragment));
                    }
                    // The segment's header is written afresh (its length grows), its TCP
                    // checksum too: not one whose IPv4 header checksum fails (Linux drops it in
                    // `ip_rcv`), nor one corrupted on the wire (its TCP checksum fails), whose
                    // corruption would reach the server's application as the client's data.
                    if let Err(bad) = csum::verify(pkt.data(), p) {
                        return Err(Next::Drop(bad.into()));
                    }
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
                    let grown = |d: &mut [u8]| -> Result<(), Truncated> {
                        let mut ip = IpMut::at_mut(d, p.l3, p.v6)?;
                        let n = ip.packet_len().checked_add(h as u16).ok_or(Truncated)?;
                        ip.set_packet_len(n);
                        if !p.v6 {
                            csum::fill_ipv4(d, p.l3)?;
                        }
                        Ok(())
                    };
                    if grown(d).is_err() {
                        return Err(Next::Drop(DropReason::Malformed));
                    }
                    let Ok(p2) = parse::parse(pkt.data()) else { return Err(Next::Drop(DropReason::Malformed)) };
                    if csum::fill_l4(pkt.data_mut(), &p2).is_err() {
                        return Err(Next::Drop(DropReason::Malformed));
                    }
                    reparsed = Some(p2);
                } else if pp.known && !syn {
                    // At the stream start without the header (a pure ACK, FIN or RST once the
                    // server acknowledged the header) it comes after the header in the
                    // server's space: unshifted, the server's TCP would find it before its
                    // window and discard it (a server speaking first never got its banner
                    // acknowledged).
                    let new = if seq == pp.start() { seq.wrapping_add(pp.delta()) } else { pp.map_seq(seq) };
                    if new != seq {
                        let Ok(mut t) = Tcp::at_mut(pkt.data_mut(), l4) else {
                            return Err(Next::Drop(DropReason::Malformed));
                        };
                        let c = t.rewrite_seq(new);
                        t.adjust_checksum(c);
                    }
                }
            }
            Dir::Out => {
                let d = pkt.data_mut();
                let mut opt_delta = 0;
                if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                    // Room for the header in the client's first full-sized segment.
                    if let Some(o) = d.get_mut(opts.clone()) {
                        if let Some(m) = crate::wire::tcpopt::mss(o) {
                            let old = o.to_vec();
                            crate::wire::tcpopt::clamp_mss(o, m.saturating_sub(pp.delta() as u16).max(256));
                            opt_delta = crate::wire::tcpopt::csum_delta(&old, o);
                        }
                    }
                }
                if p.tcp_flags & TCP_ACK != 0 && pp.known {
                    let new = pp.map_ack(ack);
                    if ack.wrapping_sub(pp.start()) >= pp.delta() && (ack.wrapping_sub(pp.start()) as i32) > 0 {
                        pp.acked = true;
                    }
                    if new != ack {
                        if let Ok(mut t) = Tcp::at_mut(d, l4) {
                            opt_delta = csum::add(opt_delta, t.rewrite_ack(new));
                        }
                    }
                    if let Some(o) = d.get_mut(opts) {
                        let old = o.to_vec();
                        if crate::wire::tcpopt::map_sack(o, |a, b| (pp.map_ack(a), pp.map_ack(b))) {
                            opt_delta = csum::add(opt_delta, crate::wire::tcpopt::csum_delta(&old, o));
                        }
                    }
                }
                if opt_delta != 0 {
                    if let Ok(mut t) = Tcp::at_mut(d, l4) {
                        t.adjust_checksum(opt_delta);
                    }
                }
            }
        }
        if let Some(x) = self.flows.cold_mut(idx).pp.as_deref_mut() {
            *x = pp;
        }
        Ok(reparsed)
    }
}
