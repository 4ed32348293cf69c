//! IP fragments of tracked connections ([`crate::flow::frag`]): the first one goes through the
//! connection path, later ones follow it by datagram or wait for it.

use super::*;
use crate::wire::view::{Ipv4, IPV4_DF};

impl<Q: BufAlloc> Worker<Q> {
    /// An IP fragment (see [`crate::flow::frag`]): the first one goes through the ordinary
    /// connection path (it carries the ports); later ones follow it by datagram, or wait for it.
    pub(super) fn fragment(&mut self, iface: usize, mut pkt: Q::Buf, handed: bool) {
        let f = match frag::parse_fragment(pkt.data()) {
            Ok(f) => f,
            Err(e) => {
                self.drop_pkt(match e {
                    parse::ParseError::Unsupported => DropReason::Fragment,
                    _ => DropReason::Malformed,
                });
                return;
            }
        };
        // The header checksum first, as Linux's `ip_rcv` before reassembly: a fragment corrupted
        // on the wire must not create the connection, take its place in its datagram (the good
        // copy would then be a duplicate), poison the datagram with the offset the corruption
        // gave it, nor wait in the hold buffer. (Fragments are the slow path: checked here
        // once, before a handoff, and again, cheaply, after it.)
        if !csum::ip_header_ok(pkt.data(), f.l3, f.v6) {
            self.drop_pkt(DropReason::IpBadChecksum);
            return;
        }
        let dmac = &pkt.data()[0..6];
        if !(dmac[0] & 1 == 1 || self.snap.ifaces.get(iface).is_some_and(|i| i.mac == dmac)) {
            self.drop_pkt(DropReason::NotForUs);
            return;
        }
        if f.proto != PROTO_TCP && f.proto != PROTO_UDP {
            self.drop_pkt(DropReason::Fragment);
            return;
        }
        let dst_vip = self.snap.vips.contains(&f.dst);
        let client = if dst_vip { f.src } else { f.dst };
        if !handed && self.workers > 1 {
            let range = if dst_vip { None } else { self.laddr_range(f.dst) };
            let owner = if let Some(range) = range {
                // Full NAT reply: the first fragment's local port names the owner; later
                // fragments (no ports) follow where their first went.
                let key = f.key();
                self.frag_steer.retain(|s| s.2 > self.now);
                if f.offset == 0 {
                    let Some(p) = f.first(pkt.data()) else {
                        self.drop_pkt(DropReason::FragTiny);
                        return;
                    };
                    let owner = self.lport_owner_at(range, p.dport);
                    if owner != self.id {
                        if self.frag_steer.len() >= frag::MAX_FRAG_HELD {
                            self.frag_steer.remove(0);
                        }
                        self.frag_steer.push((key, owner as u8, self.now + frag::FRAG_HOLD_NS));
                        // Later fragments that came first go along.
                        let mut k = 0;
                        while k < self.frag_held.len() {
                            if self.frag_held[k].key == key {
                                let h = self.frag_held.swap_remove(k);
                                bump(&self.counters.handoff_out, 1);
                                self.hand_off(owner, h.iface, h.buf);
                            } else {
                                k += 1;
                            }
                        }
                    }
                    owner
                } else {
                    match self.frag_steer.iter().find(|s| s.0 == key) {
                        Some(s) => s.1 as usize,
                        // Not seen its first yet: the ordinary path holds it here (or forwards
                        // it, if this worker had the first).
                        None => self.id,
                    }
                }
            } else {
                owner_of(client, self.workers)
            };
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                self.hand_off(owner, iface as u8, pkt);
                return;
            }
        }
        let key = f.key();
        if f.offset == 0 {
            let Some(p) = f.first(pkt.data()) else {
                self.drop_pkt(DropReason::FragTiny);
                return;
            };
            // A first fragment of a datagram in flight: a copy is dropped alone, another
            // poisons the datagram; neither touches the connection (its TCP state, counters).
            // (An IPv6 atomic fragment is a whole datagram: none is in flight for it.)
            match if f.more { self.frags.check_first(&key, f.range(), self.now) } else { None } {
                Some(FragVerdict::Duplicate) => {
                    self.drop_pkt(DropReason::FragDuplicate);
                    return;
                }
                Some(_) => {
                    self.drop_pkt(DropReason::FragOverlap);
                    return;
                }
                None => {}
            }
            let fkey = flow_key(&p);
            // Whether it is answered with an ICMP error (too big) rather than forwarded.
            let errors = self.counters.icmp_sent.load(std::sync::atomic::Ordering::Relaxed);
            let next = match self.flows.lookup(&fkey) {
                // The FTP gateway works on whole segments: a fragmented control segment
                // (never seen from real stacks, which use path MTU discovery) is refused.
                Some((idx, _)) if self.flows.get(idx).flags & F_ALG != 0 => Next::Drop(DropReason::Fragment),
                // Across families a fragment would need an IPv6 fragment header: not done.
                Some((idx, _)) if self.flows.get(idx).flags & F_XLAT != 0 => Next::Drop(DropReason::XlatUnsupported),
                Some((idx, dir)) if !self.flows.get(idx).expired(self.now) => self.forward(idx, dir, &mut pkt, &p),
                _ if dst_vip => self.new_inbound(&mut pkt, &p),
                _ => self.new_outbound(&mut pkt, &p),
            };
            // An IPv6 atomic fragment (offset 0, no more: RFC 6946) is a whole datagram:
            // nothing follows it, and its ID may be reused by the next one at once.
            if f.more && !matches!(next, Next::Drop(_)) {
                if let Some((idx, dir)) = self.flows.lookup(&fkey) {
                    let flow = frag::FragFlow { conn: idx, gen: self.flows.get(idx).gen, inbound: dir == Dir::In };
                    let verdict = self.frags.first(key, flow, f.range(), self.now);
                    bump(&self.counters.frag_evicted, std::mem::take(&mut self.frags.evicted));
                    // Answered instead of forwarded: the later fragments go nowhere either.
                    if self.counters.icmp_sent.load(std::sync::atomic::Ordering::Relaxed) != errors {
                        self.frags.refuse(&key);
                    }
                    if verdict == FragVerdict::Overlap {
                        self.drop_pkt(DropReason::FragOverlap);
                        return;
                    }
                }
            }
            self.finish(pkt, next);
            // Fragments that came first now have their datagram. Each is taken out and
            // handled once: if the first fragment was dropped they are held again, until
            // the deadline they had (a fresh one each time would let a sender repeating
            // such first fragments keep them for ever); re-scanning would take them again.
            let mut ready = Vec::new();
            let mut k = 0;
            while k < self.frag_held.len() {
                if self.frag_held[k].key == key {
                    ready.push(self.frag_held.swap_remove(k));
                } else {
                    k += 1;
                }
            }
            for h in ready {
                match frag::parse_fragment(h.buf.data()) {
                    Ok(f) => self.later_fragment(h.iface as usize, h.buf, &f, h.deadline),
                    Err(_) => self.drop_pkt(DropReason::Malformed),
                }
            }
            return;
        }
        // RFC 1858: a TCP fragment at offset 8 can rewrite the flags of the first one.
        if f.proto == PROTO_TCP && f.offset == 8 {
            self.drop_pkt(DropReason::FragTiny);
            return;
        }
        self.later_fragment(iface, pkt, &f, self.now + frag::FRAG_HOLD_NS);
    }

    /// A later fragment (its checks passed): forwarded on its datagram's connection, or held
    /// until `deadline` for its first fragment.
    fn later_fragment(&mut self, iface: usize, mut pkt: Q::Buf, f: &frag::Fragment, deadline: u64) {
        let key = f.key();
        match self.frags.later(&key, f.range(), f.more, self.now) {
            FragVerdict::Forward(fl) => {
                let next = self.forward_fragment(fl, &mut pkt, f);
                self.finish(pkt, next);
            }
            FragVerdict::Overlap => self.drop_pkt(DropReason::FragOverlap),
            FragVerdict::Duplicate => self.drop_pkt(DropReason::FragDuplicate),
            FragVerdict::Refused => self.drop_pkt(DropReason::TooBig),
            FragVerdict::Unknown => {
                // Full: fair between sources (as the datagrams in flight are): the oldest
                // fragment of the source holding the most makes room, unless this one's
                // source holds as many. A source flooding fragments whose first never comes
                // then fills only the room nobody else wants.
                if self.frag_held.len() >= frag::MAX_FRAG_HELD {
                    let mut srcs = [0; frag::MAX_FRAG_HELD];
                    for (s, h) in srcs.iter_mut().zip(&self.frag_held) {
                        *s = frag::source_of(h.key.src);
                    }
                    let src = frag::source_of(key.src);
                    let (busiest, most) = frag::busiest(&mut srcs);
                    let mine = srcs.iter().filter(|&&s| s == src).count();
                    if mine >= most {
                        self.drop_pkt(DropReason::FragHeldFull);
                        return;
                    }
                    if let Some(i) = self.frag_held.iter().position(|h| frag::source_of(h.key.src) == busiest) {
                        drop(self.frag_held.remove(i));
                        self.drop_pkt(DropReason::FragHeldFull);
                    }
                }
                self.frag_held.push(Held { key, iface: iface as u8, buf: pkt, deadline });
            }
        }
    }

    /// A later fragment of a datagram whose first fragment went out on connection `fl`: the
    /// same IP-level translation (NAT: addresses and TTL; the ports and the L4 checksum live in
    /// the first fragment), DR/tunnel as any packet.
    pub(super) fn forward_fragment(&mut self, fl: frag::FragFlow, pkt: &mut Q::Buf, f: &frag::Fragment) -> Next {
        let Some(c) = self.flows.try_get(fl.conn).filter(|c| c.gen == fl.gen) else {
            return Next::Drop(DropReason::FragTimeout);
        };
        if c.flags & F_XLAT != 0 {
            return Next::Drop(DropReason::XlatUnsupported);
        }
        let inbound = fl.inbound;
        let egress = if inbound { self.flows.if_in(c) } else { self.flows.if_out(c) };
        let over = if c.fwd == Forward::Tunnel {
            if addr_is_v4(self.flows.rs_of(c).0) {
                20
            } else {
                40
            }
        } else {
            0
        };
        let mtu = self.caps.get(egress as usize).map_or(usize::MAX, |c| c.mtu as usize);
        // Over the MTU: cut into smaller fragments once rewritten or encapsulated (`split_out`)
        // if IPv4 with DF clear, as Linux's output path does; otherwise (IPv6: only its source
        // fragments) a drop, without an ICMP error as it is not the first fragment (RFC 1122
        // 3.2.2).
        let over_mtu = f.end - f.l3 + over > mtu;
        if over_mtu && (f.v6 || Ipv4::at(pkt.data(), f.l3).map_or(true, |h| h.frag_word() & IPV4_DF != 0)) {
            return Next::Drop(DropReason::TooBig);
        }
        // Nor one with DF set over a path MTU learnt towards the tunnel real server (the first
        // fragment was told it): a router would drop it. One with DF clear is cut to it below.
        let mut cap = usize::MAX;
        if over != 0 && inbound && !self.pmtu.is_empty() {
            let rs = self.flows.rs_of(c).0;
            if self.tunnel_path_limit(rs, pkt.data(), f.l3, f.end, f.v6, over).is_some() {
                return Next::Drop(DropReason::TooBig);
            }
            cap = self.tunnel_cut(rs, mtu);
        }
        let over_mtu = f.end - f.l3 + over > cap.min(mtu);
        let c = self.flows.get(fl.conn);
        match c.fwd {
            Forward::Nat => {
                let (addr, l3d) =
                    if inbound { (self.flows.rs_of(c).0, c.l3_in) } else { (self.flows.vip_of(c).0, c.l3_out()) };
                match rewrite_ip(pkt.data_mut(), f.l3, f.v6, inbound, addr, l3d) {
                    Ok(()) => {}
                    Err(r) => return Next::Drop(r),
                }
            }
            Forward::Fnat => {
                let (src, dst, l3d) = if inbound {
                    (self.flows.laddr_of(c), self.flows.rs_of(c).0, c.l3_in)
                } else {
                    (self.flows.vip_of(c).0, c.client(), c.l3_out())
                };
                if let Err(r) = rewrite_addrs(pkt.data_mut(), f.l3, f.v6, Some(src), Some(dst), l3d) {
                    return Next::Drop(r);
                }
            }
            Forward::Dr => {}
            Forward::Tunnel => {
                let (iface, rs) = (self.flows.if_in(c) as usize, self.flows.rs_of(c).0);
                let Some(src) = self.snap.ifaces[iface].source_for(rs) else {
                    return Next::Drop(DropReason::NoRoute);
                };
                if !encap_ipip(pkt, &f.as_parsed(), src, rs, self.caps[iface].mtu, true, &mut self.ip_ident) {
                    return Next::Drop(DropReason::TooBig);
                }
            }
        }
        let next = self.l2_out(fl.conn, inbound, pkt);
        if over_mtu {
            return self.split_out(pkt, f.l3, next, cap);
        }
        next
    }
}
