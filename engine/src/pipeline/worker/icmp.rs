//! ICMP errors: the ones the balancer originates (fragmentation needed / packet too big, rate-
//! limited) and the ones about a connection it translates (IPVS `ip_vs_in_icmp` /
//! `ip_vs_out_icmp`).

use super::*;
use crate::wire::view::{IpMut, Ipv4, Ports, Truncated, IPV4_DF};

impl<Q: BufAlloc> Worker<Q> {
    /// May the worker originate an ICMP error to `to` now? Within `to`'s own bucket
    /// (`[engine] icmp_host_rate`, checked first, so that a host over its share takes
    /// nothing from the others), then the worker's (`icmp_rate`); a refusal is counted
    /// (`icmp_ratelimited`).
    #[inline]
    fn icmp_allow(&mut self, to: Addr) -> bool {
        if self.icmp_cfg.0 != 0 && self.icmp_hosts.allow(self.now, to) && self.icmp_rl.allow(self.now) {
            return true;
        }
        bump(&self.counters.icmp_ratelimited, 1);
        false
    }

    /// A packet of a connection that does not fit the egress MTU (`mtu`, what the next hop
    /// takes): turned into ICMP "fragmentation needed" / ICMPv6 "packet too big" back to its
    /// sender when [`icmpgen::may_answer`] allows and the worker's token bucket has a token;
    /// otherwise a `too_big` drop.
    ///
    /// The error's source is what the sender talked to: the VIP for a client's packet (Linux's
    /// `icmp_send` answers from the packet's local destination; IPVS calls it on the packet
    /// before NAT). For a real server's NAT reply (a client-side MTU smaller than the real
    /// server's), the error goes to the real server from the balancer's own address on that
    /// side: in Linux the reply is routed by `ip_forward`, which checks the MTU before IPVS's
    /// SNAT and answers from the router's address, so the real server learns the path MTU
    /// towards the client.
    #[inline(never)]
    pub(super) fn too_big(&mut self, dir: Dir, pkt: &mut Q::Buf, p: &Parsed, mtu: usize) -> Next {
        // The error goes to the packet's source with a header of our own: not about a packet
        // whose header checksum fails (Linux drops it in `ip_rcv`, before the MTU check).
        if !csum::ip_header_ok(pkt.data(), p.l3, p.v6) {
            return Next::Drop(DropReason::IpBadChecksum);
        }
        if !crate::pipeline::icmpgen::may_answer(pkt.data(), p) {
            return Next::Drop(DropReason::TooBig);
        }
        let Some((iface, nh)) = self.snap.route(p.src) else {
            return Next::Drop(DropReason::TooBig);
        };
        let src = match dir {
            Dir::In => Some(p.dst),
            Dir::Out => self.snap.ifaces.get(iface).and_then(|i| i.source_for(p.src)),
        };
        let Some(src) = src else {
            return Next::Drop(DropReason::TooBig);
        };
        if !self.icmp_allow(p.src) {
            return Next::Drop(DropReason::TooBig);
        }
        // Back to the neighbour the packet came from when the route's next hop is unknown.
        let d = pkt.data();
        let dmac = self.neigh.get(nh).unwrap_or_else(|| d[6..12].try_into().unwrap_or([0; 6]));
        let smac = self.if_macs.get(iface).copied().unwrap_or([0; 6]);
        if !crate::pipeline::icmpgen::build(pkt, p, src, mtu.min(u32::MAX as usize) as u32, smac, dmac) {
            return Next::Drop(DropReason::TooBig);
        }
        bump(&self.counters.icmp_sent, 1);
        Next::Tx(iface)
    }

    /// An ICMP error to one of our own addresses about a tunnel packet the balancer sent
    /// (quoted as `t`): a router between the balancer and a tunnel real server reporting
    /// "fragmentation needed" / "packet too big" (or another error) for the outer packet. As
    /// IPVS's `ip_vs_in_icmp` does for IPIP, the client learns it: the error goes to the
    /// client, from the VIP, in the client's family, quoting the client's packet as far as the
    /// router quoted it; a too-big report with the MTU less the outer header (an IPv4 report
    /// under 552 taken as 552, an IPv6 one under 1280 as 1280: [`reported_path_mtu`]; never
    /// below the client's family's minimum, 68 / 1280), other errors relayed with their type
    /// and code (RFC 7915's mapping across families), a parameter problem's pointer made the
    /// client's ([`relayed_tunnel_error`]). Built as the balancer's own errors are
    /// ([`icmpgen`]) and rate-limited by the same token bucket. Only for a tunnel connection
    /// whose key the quoted client packet names, whose real server is the quoted outer
    /// destination and whose outer source is the address the error came to: a forged error
    /// reaches no other connection's client (`no_flow`); a too-big report from such an error
    /// also teaches the path MTU towards the real server ([`crate::pipeline::pmtu`]).
    ///
    /// [`icmpgen`]: crate::pipeline::icmpgen
    #[inline(never)]
    pub(super) fn tunnel_icmp_error(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        p: &Parsed,
        t: &parse::TunnelQuote,
        handed: bool,
    ) {
        let inner = &t.inner;
        if !handed && self.workers > 1 {
            // The client the quoted packet came from decides the owner.
            let owner = owner_of(inner.src, self.workers);
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                self.hand_off(owner, iface as u8, pkt);
                return;
            }
        }
        // The quoted packet went client -> VIP: the connection's key as it is.
        let key =
            FlowKey { src: inner.src, dst: inner.dst, sport: inner.sport, dport: inner.dport, proto: inner.proto };
        let idx = match self.flows.lookup(&key) {
            Some((idx, Dir::In)) => idx,
            _ => return self.drop_pkt(DropReason::NoFlow),
        };
        let c = self.flows.get(idx);
        if c.fwd != Forward::Tunnel || c.flags & F_XLAT != 0 || self.flows.rs_of(c).0 != t.dst || t.src != p.dst {
            return self.drop_pkt(DropReason::NoFlow);
        }
        let vip = self.flows.vip_of(c).0;
        let egress = self.caps.get(self.flows.if_in(c) as usize).map_or(u16::MAX, |c| c.mtu) as u32;
        // Its checksums are not those of what goes out (built afresh), but a corrupted quote
        // (its addresses, its MTU) is not handed on as a valid error.
        if let Err(bad) = csum::verify(pkt.data(), p) {
            return self.drop_pkt(bad.into());
        }
        let d = pkt.data();
        let rest: [u8; 4] = match d.get(p.l4 + 4..p.l4 + 8).and_then(|r| r.try_into().ok()) {
            Some(r) => r,
            None => return self.drop_pkt(DropReason::Malformed),
        };
        let too_big = if p.v6 { p.icmp_type == 2 } else { p.icmp_type == 3 && p.icmp_code == 4 };
        let kind = if too_big {
            let reported = if p.v6 { u32::from_be_bytes(rest) } else { u16::from_be_bytes([rest[2], rest[3]]) as u32 };
            let path = reported_path_mtu(p.v6, reported, egress);
            // Learnt for the connection's real server (only lower than the egress MTU: the
            // check against that is there already), whatever the client is told.
            if path < egress {
                if self.pmtu.learn(t.dst, path, self.now) {
                    bump(&self.counters.tunnel_mtu_learnt, 1);
                }
                bump(&self.counters.tunnel_mtu_evicted, std::mem::take(&mut self.pmtu.evicted));
            }
            let mtu = path.saturating_sub(t.hdr as u32);
            if t.inner_v6 {
                (2, 0, mtu.max(1280))
            } else {
                (3, 4, mtu.clamp(68, u16::MAX as u32))
            }
        } else {
            match relayed_tunnel_error(p.v6, t.inner_v6, t.hdr, p.icmp_type, p.icmp_code, rest) {
                Some(k) => k,
                None => return self.drop_pkt(DropReason::Unsupported),
            }
        };
        // The frame becomes the client's quoted packet behind the received L2 header, parsed
        // as that packet (cut where the quote ends).
        let cut = inner.l3 - p.l3;
        let q = Parsed {
            l3: p.l3,
            l4: inner.l4 - cut,
            payload: inner.l4 - cut,
            end: p.end - cut,
            v6: t.inner_v6,
            proto: inner.proto,
            src: inner.src,
            dst: inner.dst,
            sport: inner.sport,
            dport: inner.dport,
            ..Parsed::default()
        };
        if !pkt.set_len(p.end) {
            return self.drop_pkt(DropReason::Malformed);
        }
        pkt.data_mut().copy_within(0..p.l3, cut);
        if !pkt.adj(cut) {
            return self.drop_pkt(DropReason::Malformed);
        }
        // A too-big report about a client packet without DF gets nothing (IPVS: the client does
        // not do path MTU discovery), as the balancer's own.
        if !crate::pipeline::icmpgen::may_report(pkt.data(), &q, too_big) {
            return self.drop_pkt(DropReason::TooBig);
        }
        let Some((out, nh)) = self.snap.route(inner.src) else {
            return self.drop_pkt(DropReason::NoRoute);
        };
        if !self.icmp_allow(inner.src) {
            return self.drop_pkt(DropReason::TooBig);
        }
        let smac = self.if_macs.get(out).copied().unwrap_or([0; 6]);
        let dmac = self.neigh.resolve(nh).filter(|m| *m != [0; 6]);
        if !crate::pipeline::icmpgen::build_error(&mut pkt, &q, vip, kind, smac, dmac.unwrap_or([0; 6])) {
            return self.drop_pkt(DropReason::TooBig);
        }
        bump(&self.counters.icmp_sent, 1);
        let next = if dmac.is_some() {
            Next::Tx(out)
        } else {
            self.solicit(out, nh);
            Next::Park(out, nh)
        };
        self.finish(pkt, next);
    }

    /// A client's packet of tunnel connection `idx` checked against the path MTU learnt towards
    /// its real server ([`crate::pipeline::pmtu`]), `over` the outer header's length, as
    /// IPVS's `ip_vs_tunnel_xmit` checks it against the route's: one that would outgrow it
    /// once encapsulated gets the balancer's own "fragmentation needed" / "packet too big"
    /// ([`Self::too_big`]: rate-limited, else a `too_big` drop) with the learnt MTU less the
    /// outer header, rather than going to a router that drops it again. An IPv4 packet without
    /// DF goes on (`None`) as IPVS sends it (its sender does no path MTU discovery), and so
    /// does an IPv6 packet within 1280 bytes (less cannot be asked of an IPv6 sender).
    #[inline(never)]
    pub(super) fn tunnel_path_too_big(&mut self, idx: u32, pkt: &mut Q::Buf, p: &Parsed, over: usize) -> Option<Next> {
        let rs = self.flows.rs_of(self.flows.get(idx)).0;
        let mtu = self.tunnel_path_limit(rs, pkt.data(), p.l3, p.end, p.v6, over)?;
        Some(self.too_big(Dir::In, pkt, p, mtu))
    }

    /// The rule of [`Self::tunnel_path_too_big`] for the IP packet `d[l3..end]` of a tunnel
    /// connection to real server `rs`: the largest packet the learnt path MTU lets through once
    /// encapsulated (`over` the outer header), if this one is larger and its sender does path
    /// MTU discovery (IPv4: DF set; IPv6: always, never asked below 1280); else `None`.
    pub(super) fn tunnel_path_limit(
        &mut self,
        rs: Addr,
        d: &[u8],
        l3: usize,
        end: usize,
        v6: bool,
        over: usize,
    ) -> Option<usize> {
        let path = self.pmtu.get(rs, self.now)? as usize;
        let mut mtu = path.saturating_sub(over);
        if v6 {
            mtu = mtu.max(1280);
        }
        if end - l3 <= mtu {
            return None;
        }
        if !v6 && Ipv4::at(d, l3).map_or(true, |h| h.frag_word() & IPV4_DF == 0) {
            return None;
        }
        Some(mtu)
    }

    /// Translate an ICMP error about a tracked connection.
    pub(super) fn icmp_error(&mut self, mut pkt: Q::Buf, p: &Parsed, inner: &parse::Inner, to_vip: bool) {
        // The quoted packet travelled the other way: reverse it to find
        // the connection key as this side sees it.
        let key =
            FlowKey { src: inner.dst, dst: inner.src, sport: inner.dport, dport: inner.sport, proto: inner.proto };
        let Some((idx, dir)) = self.flows.lookup(&key) else {
            self.drop_pkt(DropReason::NoFlow);
            return;
        };
        // The translation writes the outer header's checksum afresh: an error whose header
        // checksum fails (dropped by Linux in `ip_rcv`) is not taken; nor one whose ICMP
        // checksum fails, computed afresh over the rewritten quote (`Quote::apply`,
        // `nat64::translate_icmp_error`): a quote corrupted on the wire is not handed on valid
        // (Linux's `icmp_error` / `icmpv6_error` mark it INVALID, never translated). Checked
        // once the quoted connection is known: a flood of errors for connections that do not
        // exist costs no checksum.
        if let Err(bad) = csum::verify(pkt.data(), p) {
            self.drop_pkt(bad.into());
            return;
        }
        let c = self.flows.get(idx);
        let (fwd, rs, rport, vip, vport) =
            (c.fwd, self.flows.rs_of(c).0, self.flows.rs_of(c).1, self.flows.vip_of(c).0, self.flows.vip_of(c).1);
        let (client, cport, la, lport) = (c.client(), c.cport, self.flows.laddr_of(c), c.lport());
        if c.flags & F_XLAT != 0 {
            // Across families: the error is rebuilt in the other family (RFC 7915), reported
            // by the VIP to the client or by the local address to the real server.
            let r = match (dir, to_vip) {
                (Dir::Out, false) => crate::pipeline::nat64::translate_icmp_error(
                    &mut pkt,
                    p,
                    inner,
                    vip,
                    client,
                    (client, cport),
                    (vip, vport),
                ),
                (Dir::In, true) => {
                    crate::pipeline::nat64::translate_icmp_error(&mut pkt, p, inner, la, rs, (rs, rport), (la, lport))
                }
                _ => Err(DropReason::NoFlow),
            };
            if let Err(r) = r {
                self.drop_pkt(r);
                return;
            }
            bump(&self.counters.icmp_translated, 1);
            let next = self.l2_out(idx, dir == Dir::In, &mut pkt);
            return self.finish(pkt, next);
        }
        // SYN proxy: the quoted segment back into the sequence space of the end the error
        // goes to (the client's acknowledgements and the server's sequence numbers are
        // shifted by the connection's offset). Linux ignores an error whose quoted sequence
        // number is outside its send window (`tcp_v4_err`), so without this a proxied
        // connection's real server never learns the path MTU towards the client.
        let proxy_delta = match self.flows.cold(idx).proxy.as_deref() {
            Some(x) if x.established && c.flags & F_SYNPROXY != 0 && inner.proto == PROTO_TCP => Some(x.delta),
            _ => None,
        };
        let d = pkt.data_mut();
        let before = QuotedL4::take(d, p, inner);
        if let Some(delta) = proxy_delta {
            unshift_quoted_tcp(d, p, inner, dir, delta);
        }
        let mut q = Quote::default();
        match (dir, to_vip) {
            (Dir::In, true) if fwd == Forward::Fnat => {
                // From the client side about our VIP:vport -> client:cport: as the real server
                // sees it, RS:rport -> LADDR:lport, reported by the local address.
                q.outer = (Some(la), Some(rs));
                q.inner = (Some(rs), Some(la));
                q.ports = (Some(rport), Some(lport));
            }
            (Dir::Out, false) if fwd == Forward::Fnat => {
                // From the real-server side about our LADDR:lport -> RS:rport: the client sees
                // its own VIP-bound packet quoted, reported by the VIP (whoever reported it,
                // the real server or a router on its side: see below).
                q.outer = (Some(vip), Some(client));
                q.inner = (Some(client), Some(vip));
                q.ports = (Some(cport), Some(vport));
            }
            (Dir::In, true) => {
                // Error from the client side about our VIP->client packet.
                if fwd == Forward::Nat {
                    q.outer.1 = Some(rs);
                    q.inner.0 = Some(rs);
                    q.ports.0 = Some(rport);
                }
            }
            (Dir::Out, false) => {
                // Error from the real-server side about client->RS packet, reported by the VIP
                // whoever sent it (the real server, or a router between it and the balancer),
                // as IPVS's `ip_vs_nat_icmp` and Linux's `nf_nat_icmp_reply_translation` do: a
                // router's address on the real servers' network would map that network for a
                // client sending low-TTL packets, and, private, be filtered on the way.
                q.outer.0 = Some(vip);
                q.inner.1 = Some(vip);
                q.ports.1 = Some(vport);
            }
            _ => {
                self.drop_pkt(DropReason::NoFlow);
                return;
            }
        }
        match q.apply(d, p, inner, &before) {
            Ok(true) => {}
            Ok(false) => {
                self.drop_pkt(DropReason::TtlExceeded);
                return;
            }
            Err(Truncated) => {
                self.drop_pkt(DropReason::Malformed);
                return;
            }
        }
        if fwd == Forward::Tunnel && dir == Dir::In {
            // To a tunnel real server as every packet of its connection: encapsulated
            // (IPVS `ip_vs_icmp_xmit` sends it with the connection's `packet_xmit`).
            let iface = self.flows.if_in(self.flows.get(idx)) as usize;
            let Some(src) = self.snap.ifaces.get(iface).and_then(|i| i.source_for(rs)) else {
                self.drop_pkt(DropReason::NoRoute);
                return;
            };
            let mtu = self.caps.get(iface).map_or(0, |c| c.mtu);
            if !encap_ipip(&mut pkt, p, src, rs, mtu, false, &mut self.ip_ident) {
                self.drop_pkt(DropReason::TooBig);
                return;
            }
        }
        bump(&self.counters.icmp_translated, 1);
        let next = self.l2_out(idx, dir == Dir::In, &mut pkt);
        self.finish(pkt, next);
    }
}

/// The quoted TCP header of an ICMP error (frame `d`, parsed as `p`, quoting `inner`) about a
/// SYN-proxied connection with offset `delta`, back in its receiver's sequence space: a
/// server segment (`Dir::In`: the error comes from the client's side) gets its sequence
/// number back (`- delta`, always quoted: the first 8 bytes); a client segment (`Dir::Out`)
/// its acknowledgement (`+ delta`), when the quote holds it and the segment carries one. The
/// quoted checksum follows in [`Quote::apply`] ([`QuotedL4::fix`]).
fn unshift_quoted_tcp(d: &mut [u8], p: &Parsed, inner: &parse::Inner, dir: Dir, delta: u32) {
    let Some(t) = d.get_mut(inner.l4..p.end) else { return };
    let (off, by) = match dir {
        Dir::In => (4, delta.wrapping_neg()),
        Dir::Out if t.get(13).is_some_and(|f| f & parse::TCP_ACK != 0) => (8, delta),
        Dir::Out => return,
    };
    if let Some(w) = t.get_mut(off..off + 4) {
        let v = u32::from_be_bytes([w[0], w[1], w[2], w[3]]).wrapping_add(by);
        w.copy_from_slice(&v.to_be_bytes());
    }
}

/// What the translation of an ICMP error writes: the outer header's source and
/// destination, the quoted header's, and the quoted ports (`None`: left as received).
#[derive(Default)]
struct Quote {
    outer: (Option<Addr>, Option<Addr>),
    inner: (Option<Addr>, Option<Addr>),
    ports: (Option<u16>, Option<u16>),
}

impl Quote {
    /// Write it into frame `d` (parsed as `p`, quoting `inner`; `before`: the quoted transport
    /// header as received), then the checksums: the quoted IPv4 header's when it is whole, the
    /// quoted transport checksum when the quote holds it ([`QuotedL4::fix`]), the outer
    /// header's TTL / hop limit decremented (IPv4: its checksum), and the ICMP checksum.
    /// `Ok(false)`: the TTL / hop limit ran out.
    fn apply(&self, d: &mut [u8], p: &Parsed, inner: &parse::Inner, before: &QuotedL4) -> Result<bool, Truncated> {
        let v6 = p.v6;
        for (l3, (src, dst)) in [(p.l3, self.outer), (inner.l3, self.inner)] {
            let mut h = IpMut::at_mut(d, l3, v6)?;
            if let Some(a) = src {
                h.set_addr(true, a);
            }
            if let Some(a) = dst {
                h.set_addr(false, a);
            }
        }
        if self.ports != (None, None) {
            let mut w = Ports::at_mut(d, inner.l4)?;
            if let Some(s) = self.ports.0 {
                w.set_src(s);
            }
            if let Some(t) = self.ports.1 {
                w.set_dst(t);
            }
        }
        if !v6 && inner.l3 + Ipv4::at(d, inner.l3)?.header_len() <= p.end {
            csum::fill_ipv4(d, inner.l3)?;
        }
        before.fix(d, p, inner, (self.inner.0.unwrap_or(inner.src), self.inner.1.unwrap_or(inner.dst)));
        // Forwarded: the TTL / hop limit goes down by one, as for any packet.
        let mut h = IpMut::at_mut(d, p.l3, v6)?;
        let ttl = h.ttl();
        if ttl <= 1 {
            return Ok(false);
        }
        h.set_ttl(ttl - 1);
        if !v6 {
            csum::fill_ipv4(d, p.l3)?;
        }
        csum::fill_l4(d, p)?;
        Ok(true)
    }
}

/// The first bytes of a quoted TCP or UDP header as received (before any translation), so
/// that its checksum can follow what the translation changed.
struct QuotedL4 {
    src: Addr,
    dst: Addr,
    head: [u8; 20],
    /// Bytes of `head` quoted (even: whole 16-bit words).
    n: usize,
}

impl QuotedL4 {
    fn take(d: &[u8], p: &Parsed, inner: &parse::Inner) -> QuotedL4 {
        let q = d.get(inner.l4..p.end).unwrap_or(&[]);
        let n = q.len().min(20) & !1;
        let mut head = [0u8; 20];
        head[..n].copy_from_slice(&q[..n]);
        QuotedL4 { src: inner.src, dst: inner.dst, head, n }
    }

    /// The quoted transport checksum updated (RFC 1624) for the quoted addresses now being
    /// `now` and for whatever the translation changed in the header's first bytes (ports; a
    /// SYN-proxied segment's sequence or acknowledgement number), when the quote holds the
    /// checksum field: always for UDP (the first 8 bytes are always quoted), for TCP when the
    /// quote reaches its 18th byte. Linux's NAT does the same for the errors it translates
    /// (`nf_nat_icmp_reply_translation`: `udp_manip_pkt`, and `tcp_manip_pkt` when the TCP
    /// header is whole); IPVS leaves it. A UDP checksum of 0 (none, IPv4) stays 0.
    fn fix(&self, d: &mut [u8], p: &Parsed, inner: &parse::Inner, now: (Addr, Addr)) {
        let at = match inner.proto {
            PROTO_TCP => 16,
            PROTO_UDP => 6,
            _ => return,
        };
        if self.n < at + 2 {
            return;
        }
        let Some(q) = d.get_mut(inner.l4..inner.l4 + self.n) else { return };
        let old = u16::from_be_bytes([q[at], q[at + 1]]);
        if inner.proto == PROTO_UDP && old == 0 {
            return;
        }
        let (mut was, mut is) = ([0u8; 20], [0u8; 20]);
        was[..self.n].copy_from_slice(&self.head[..self.n]);
        is[..self.n].copy_from_slice(q);
        // The checksum field itself is not part of the delta.
        was[at..at + 2].fill(0);
        is[at..at + 2].fill(0);
        let v4 = !p.v6;
        let dl = csum::add(
            csum::delta_addr_unfolded(self.src, now.0, v4) + csum::delta_addr_unfolded(self.dst, now.1, v4),
            csum::delta(&was[..self.n], &is[..self.n]),
        );
        let mut new = csum::apply(old, dl);
        if inner.proto == PROTO_UDP && new == 0 {
            new = 0xffff;
        }
        q[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }
}

/// The least path MTU Linux takes from an IPv4 "fragmentation needed" (`ip_rt_min_pmtu`).
pub(crate) const MIN_PMTU_V4: u32 = 552;

/// The path MTU a router's "fragmentation needed" / "packet too big" about an outer tunnel
/// packet (IPv6 or not: `v6`) gives, `egress` being the MTU of the balancer's interface towards
/// the real server. IPv4: a report under 552 (0 from a router older than RFC 1191, or an
/// implausibly small one) is taken as 552, or the egress MTU if lower, as Linux's
/// `__ip_rt_update_pmtu` does (`ip_rt_min_pmtu`; IPVS `ip_vs_in_icmp` reads the route's MTU
/// back), rather than making the client send tiny packets. IPv6: never below 1280, the
/// minimum link MTU (RFC 8200).
pub(crate) fn reported_path_mtu(v6: bool, reported: u32, egress: u32) -> u32 {
    if v6 {
        reported.max(1280)
    } else if reported < MIN_PMTU_V4 {
        MIN_PMTU_V4.min(egress)
    } else {
        reported
    }
}

/// What the client is told of a router's error `ty`/`code` (its 4 bytes after the checksum
/// `rest`; not a "fragmentation needed" / "packet too big") about a tunnel packet: the outer
/// header IPv6 or not (`outer_v6`, the error's family), `hdr` bytes long, the client's packet
/// inside IPv6 or not (`inner_v6`). The type, code and `rest` as they are (across families,
/// RFC 7915's mapping: [`crate::pipeline::nat64::icmp_error_type`]), but for a parameter
/// problem (ICMPv4 12, codes 0 and 2: a pointer in the first byte; ICMPv6 4: a 32-bit pointer):
/// its pointer indexes the quoted outer packet, so the client, quoted its own packet, gets it
/// less the outer header. One inside the outer header is about the header the balancer built,
/// which the client cannot fix: `None` (not relayed; Linux's tunnels do not relay those
/// either: `ipip_err` ignores parameter problems, `ip6_tnl_err` only reports a tunnel
/// encapsulation limit reached). Across families the pointer stays an offset into the
/// client's packet, which is quoted as it was sent (RFC 7915's pointer mapping is for a quoted
/// header that was translated): ICMPv6's code 0 becomes ICMPv4's 12/0 (a pointer past 255:
/// `None`), code 1 (unrecognized next header) protocol unreachable (RFC 7915 5.2); ICMPv4's
/// codes 0 and 2 become ICMPv6's 4/0 (RFC 7915 4.2). Other parameter problems: `None`.
pub(crate) fn relayed_tunnel_error(
    outer_v6: bool,
    inner_v6: bool,
    hdr: usize,
    ty: u8,
    code: u8,
    rest: [u8; 4],
) -> Option<(u8, u8, u32)> {
    let pointer = match (outer_v6, ty, code) {
        (false, 12, 0 | 2) => Some(rest[0] as u32),
        (false, 12, _) => None,
        (true, 4, _) => Some(u32::from_be_bytes(rest)),
        _ => {
            if outer_v6 == inner_v6 {
                return Some((ty, code, u32::from_be_bytes(rest)));
            }
            let (ty, code, r) = crate::pipeline::nat64::icmp_error_type(outer_v6, ty, code, rest)?;
            return Some((ty, code, u32::from_be_bytes(r)));
        }
    };
    let Some(pointer) = pointer else {
        // ICMPv4's code 1, a required option missing: no pointer (and no ICMPv6 equivalent).
        return (outer_v6 == inner_v6).then_some((ty, code, u32::from_be_bytes(rest)));
    };
    let at = pointer.checked_sub(hdr as u32)?;
    match (outer_v6, inner_v6) {
        (false, false) => Some((ty, code, u32::from_be_bytes([at as u8, rest[1], rest[2], rest[3]]))),
        (true, true) => Some((ty, code, at)),
        (true, false) => match code {
            0 if at <= u8::MAX as u32 => Some((12, 0, at << 24)),
            1 => Some((3, 2, 0)),
            _ => None,
        },
        (false, true) => Some((4, 0, at)),
    }
}

#[cfg(test)]
mod tests {
    use super::relayed_tunnel_error;

    #[test]
    fn a_parameter_problems_pointer_is_the_clients() {
        let v4 = |p: u8| u32::from_be_bytes([p, 0, 0, 0]);
        // IPv4 in IPv4: the first byte less the outer header (options included), the rest kept.
        assert_eq!(relayed_tunnel_error(false, false, 20, 12, 0, [29, 0, 0, 0]), Some((12, 0, v4(9))));
        assert_eq!(relayed_tunnel_error(false, false, 24, 12, 2, [24, 1, 2, 3]), Some((12, 2, 0x0001_0203)));
        assert_eq!(relayed_tunnel_error(false, false, 20, 12, 0, [19, 0, 0, 0]), None);
        assert_eq!(relayed_tunnel_error(false, false, 20, 12, 1, [0, 0, 0, 0]), Some((12, 1, 0)));
        // IPv6 in IPv6: the 32-bit pointer, any code.
        assert_eq!(relayed_tunnel_error(true, true, 40, 4, 0, 46u32.to_be_bytes()), Some((4, 0, 6)));
        assert_eq!(relayed_tunnel_error(true, true, 40, 4, 2, 100_000u32.to_be_bytes()), Some((4, 2, 99_960)));
        assert_eq!(relayed_tunnel_error(true, true, 40, 4, 1, 6u32.to_be_bytes()), None);
        // Other errors as they are.
        assert_eq!(relayed_tunnel_error(false, false, 20, 11, 0, [1, 2, 3, 4]), Some((11, 0, 0x0102_0304)));
        assert_eq!(relayed_tunnel_error(true, true, 40, 3, 0, [0; 4]), Some((3, 0, 0)));
    }

    #[test]
    fn across_families_the_pointer_stays_an_offset_into_the_clients_packet() {
        // IPv4 client in IPv6: code 0 as ICMPv4's, its pointer in the first byte (the quoted
        // IPv4 header is the client's, untranslated: no RFC 7915 field mapping).
        assert_eq!(relayed_tunnel_error(true, false, 40, 4, 0, 49u32.to_be_bytes()), Some((12, 0, 9 << 24)));
        assert_eq!(relayed_tunnel_error(true, false, 40, 4, 0, (40 + 255u32).to_be_bytes()), Some((12, 0, 255 << 24)));
        assert_eq!(relayed_tunnel_error(true, false, 40, 4, 0, (40 + 256u32).to_be_bytes()), None);
        // Unrecognized next header in the client's packet: protocol unreachable (RFC 7915 5.2).
        assert_eq!(relayed_tunnel_error(true, false, 40, 4, 1, 49u32.to_be_bytes()), Some((3, 2, 0)));
        assert_eq!(relayed_tunnel_error(true, false, 40, 4, 2, 49u32.to_be_bytes()), None);
        assert_eq!(relayed_tunnel_error(true, false, 40, 4, 0, 6u32.to_be_bytes()), None);
        // IPv6 client in IPv4: codes 0 and 2 as ICMPv6's 4/0, code 1 not at all (RFC 7915 4.2).
        assert_eq!(relayed_tunnel_error(false, true, 20, 12, 0, [26, 0, 0, 0]), Some((4, 0, 6)));
        assert_eq!(relayed_tunnel_error(false, true, 20, 12, 2, [24, 0, 0, 0]), Some((4, 0, 4)));
        assert_eq!(relayed_tunnel_error(false, true, 20, 12, 0, [9, 0, 0, 0]), None);
        assert_eq!(relayed_tunnel_error(false, true, 20, 12, 1, [0; 4]), None);
        // Other errors: RFC 7915's mapping.
        assert_eq!(relayed_tunnel_error(false, true, 20, 11, 0, [0; 4]), Some((3, 0, 0)));
        assert_eq!(relayed_tunnel_error(true, false, 40, 1, 4, [0; 4]), Some((3, 3, 0)));
    }
}
