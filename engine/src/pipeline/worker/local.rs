//! What the balancer answers or originates itself on a port: ARP and neighbour discovery (the
//! neighbour cache, solicitations, packets parked while a next hop resolves), echo replies, and the
//! exception path to the kernel (`interface.kernel_port`) for the rest.

use super::*;
use crate::wire::view::{
    Arp, EthAddrs, Icmp, IpMut, Ipv6, Truncated, ARP_REPLY, ARP_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
};

impl<Q: BufAlloc> Worker<Q> {
    /// Send an ARP request / neighbour solicitation for `nh` (rate limited).
    pub(super) fn solicit(&mut self, iface: usize, nh: Addr) {
        if self.neigh.should_ask(nh, self.now) {
            self.send_solicit(iface, nh, None);
        }
    }

    /// An ARP request / neighbour solicitation for `nh` out of `iface`: broadcast / to the
    /// solicited-node group (`to: None`), or a unicast probe to `to` (Linux's PROBE state: an
    /// ARP request to that MAC, target hardware address 0 as Linux's `arp_solicit`; a
    /// solicitation to `nh` itself at that MAC, RFC 4861 section 7.3.3). Whether it went out.
    fn send_solicit(&mut self, iface: usize, nh: Addr, to: Option<[u8; 6]>) -> bool {
        let Some(src) = self.snap.ifaces[iface].source_for(nh) else { return false };
        let mac = self.snap.ifaces[iface].mac;
        let Some(mut b) = self.allocs[iface].alloc() else {
            self.drop_pkt(DropReason::NoBuffer);
            return false;
        };
        if !b.set_len(86) {
            return false;
        }
        let built = match (addr_is_v4(nh), to) {
            (true, None) => neigh::build_arp(b.data_mut(), ARP_REQUEST, mac, src, None, nh),
            (true, Some(dmac)) => neigh::build_arp(b.data_mut(), ARP_REQUEST, mac, src, None, nh)
                .and_then(|n| EthAddrs::at_mut(b.data_mut(), 0).map(|mut e| e.set_dst(dmac)).map(|()| n)),
            (false, None) => {
                let (dst, dmac) = neigh::solicited_node(nh);
                neigh::build_nd(b.data_mut(), 135, mac, dmac, addr_v6_bytes(src), dst, addr_v6_bytes(nh), 0)
            }
            (false, Some(dmac)) => {
                let t = addr_v6_bytes(nh);
                neigh::build_nd(b.data_mut(), 135, mac, dmac, addr_v6_bytes(src), t, t, 0)
            }
        };
        let Ok(n) = built else {
            self.drop_pkt(DropReason::NoBuffer);
            return false;
        };
        b.set_len(n);
        self.tx[iface].push(b);
        true
    }

    /// Age a share of the neighbour table ([`NeighCache::age`](neigh::NeighCache::age)): an
    /// entry a connection uses (a next hop with references, on its interface) is probed by
    /// unicast once unconfirmed for the reachable time, removed when its probes go
    /// unanswered (`neigh_failed`); unused entries age out.
    pub(super) fn age_neighbours(&mut self, now: u64) {
        let mut probes = std::mem::take(&mut self.neigh_probes);
        let (flows, ifaces) = (&self.flows, self.snap.ifaces.len());
        let in_use = |a: Addr| (0..ifaces).find(|&i| flows.hop_refs(a, i as u8) > 0);
        let aged = self.neigh.age(now, (self.id, self.workers), in_use, &mut probes);
        if aged.failed > 0 {
            bump(&self.counters.neigh_failed, aged.failed);
        }
        for (a, mac, iface) in probes.drain(..) {
            self.probe(iface, a, mac);
        }
        self.neigh_probes = probes;
    }

    /// A unicast probe of neighbour `nh` at `dmac` (see [`Worker::send_solicit`]).
    fn probe(&mut self, iface: usize, nh: Addr, dmac: [u8; 6]) {
        if self.send_solicit(iface, nh, Some(dmac)) {
            bump(&self.counters.neigh_probes, 1);
        }
    }

    /// Send the packets parked for `a`, now at `mac`, in the order they were parked (a FIFO,
    /// like Linux's per-neighbour queue: segments of one connection must not be reordered).
    pub(super) fn release_pending(&mut self, a: Addr, mac: [u8; 6]) {
        let mut k = 0;
        while k < self.pending.len() {
            if self.pending[k].key == a {
                // `remove`, not `swap_remove`: the queue keeps its order (at most MAX_PENDING).
                let mut p = self.pending.remove(k);
                // Parked packets were parsed: they hold an Ethernet header.
                match EthAddrs::at_mut(p.buf.data_mut(), 0) {
                    Ok(mut eth) => {
                        eth.set_dst(mac);
                        self.tx[p.iface as usize].push(p.buf);
                    }
                    Err(Truncated) => self.drop_pkt(DropReason::Malformed),
                }
            } else {
                k += 1;
            }
        }
    }

    pub(super) fn count_neigh_evictions(&mut self) {
        let n = self.neigh.take_evicted();
        if n > 0 {
            bump(&self.counters.neigh_evicted, n);
            if self.neigh_log.allow(self.now) {
                let suppressed = self.neigh_log.take_suppressed();
                tracing::warn!(
                    worker = self.id,
                    max = self.neigh.max(),
                    suppressed,
                    "neighbour table full: evicted the stalest entry"
                );
            }
        }
    }

    /// Is `a` one of our own addresses: an interface address or this node's full NAT local
    /// address (`local`), a VIP, or one a reload removed that is still answered for? What the
    /// worker answers ARP and neighbour solicitations for, and what ARP / ND must never
    /// teach it as a neighbour (see [`Worker::own_sender`]).
    pub(super) fn is_own(&self, a: Addr) -> bool {
        self.snap.is_own(a) || self.is_retired(a)
    }

    /// Does an ARP / ND packet claim one of our own addresses `a` as its sender's? Then it is
    /// an address conflict (a misconfigured host, a DR real server without `arp_announce = 2`
    /// ARPing from the VIP) or an attempt to poison the entry for that address with the
    /// sender's MAC, not a neighbour: not learnt, not updated, counted (`arp_own_addr`).
    /// Linux's `arp_process` does not learn such a sender either (its route lookup refuses a
    /// local source).
    fn own_sender(&self, a: Addr) -> bool {
        if !self.is_own(a) {
            return false;
        }
        bump(&self.counters.arp_own_addr, 1);
        true
    }

    /// May a neighbour advertisement / solicitation received on `iface`
    /// teach us `a`? The same on-link rule as ARP (`Snapshot::on_link`),
    /// plus link-local fe80::/10, which is on-link on every link (RFC 4861
    /// section 5.2) and what IPv6 routers answer from.
    pub(super) fn nd_may_learn(&self, iface: usize, a: Addr) -> bool {
        self.snap.on_link(iface, a) || (!addr_is_v4(a) && (a >> 118) == 0xfe80 >> 6)
    }

    /// Learn `a` at `mac` from an ARP or ND packet received here, which proves `seen` (see
    /// [`neigh::Seen`]), and tell the other workers. When the table is full, a neighbour
    /// nobody asked for evicts an entry only within [`neigh::EVICT_PER_SEC`]; past it, it is
    /// not learnt (`neigh_limited`).
    pub(super) fn learn_neighbor(&mut self, a: Addr, mac: [u8; 6], seen: neigh::Seen) {
        let (now, rl) = (self.now, &mut self.neigh_evict_rl);
        let learnt = self.neigh.update(a, mac, seen, Some(now), || rl.allow(now));
        if learnt == neigh::Learnt::Limited {
            bump(&self.counters.neigh_limited, 1);
            return;
        }
        self.count_neigh_evictions();
        // (Packets wait for few neighbours, and a flood of new ones should not call in.)
        if learnt == neigh::Learnt::Changed && !self.pending.is_empty() {
            self.release_pending(a, mac);
        }
        // For the other workers' caches (a single worker has none to tell): a new MAC, and a
        // confirmation (at most every `neigh::SHARE_NS`), which confirms theirs (the answer
        // to one worker's probe or request may arrive at another, see `neigh`).
        if self.workers > 1 && matches!(learnt, neigh::Learnt::Changed | neigh::Learnt::Confirmed) {
            self.events.push_back(Event::Neigh(a, mac, seen));
        }
    }

    pub(super) fn handle_arp(&mut self, iface: usize, mut pkt: Q::Buf, p: &Parsed) {
        let Ok(a) = Arp::at(pkt.data(), p.l3) else {
            self.drop_pkt(DropReason::Malformed);
            return;
        };
        if !a.is_ethernet_ipv4() {
            self.drop_pkt(DropReason::Unsupported);
            return;
        }
        let op = a.op();
        let smac = a.sender_mac();
        let (sip4, tip4) = (a.sender_ip(), a.target_ip());
        let (sip, tip) = (parse::v4_to_addr(sip4), parse::v4_to_addr(tip4));
        let for_us = self.is_own(tip);
        // Learn senders on our subnets: requests to us and replies, and any ARP of a neighbour
        // we hold (Linux's `arp_process`): a gratuitous ARP (a VRRP / keepalived failover, a
        // bonding switch-over) or a request for another host carries its new MAC, which traffic
        // must follow at once rather than after the old MAC's probes fail. Only a reply to us
        // (unicast to our MAC, for our address, not gratuitous) proves the sender reachable;
        // the rest is STALE ("broadcast replies and request packets do not assert neighbour
        // reachability", `arp_process`), so ARP nobody asked for cannot keep a dead
        // neighbour's entry alive. Never a sender claiming one of our own addresses.
        // A sender claiming one of our addresses is neither learnt nor answered: Linux's
        // `arp_process` does not answer it either (its route check refuses a local source),
        // and a reply would tell the claimant, whoever it is, that the address is taken here.
        let claims_ours = sip != parse::v4_to_addr([0; 4]) && self.own_sender(sip);
        let known = || self.neigh.get(sip).is_some();
        if sip != parse::v4_to_addr([0; 4])
            && !claims_ours
            && self.snap.on_link(iface, sip)
            && (for_us || op == ARP_REPLY || known())
        {
            let to_us = EthAddrs::at(pkt.data(), 0).is_ok_and(|e| e.dst() == self.snap.ifaces[iface].mac);
            let answer = op == ARP_REPLY && to_us && for_us && sip != tip;
            let seen = if answer { neigh::Seen::Reachable } else { neigh::Seen::Stale };
            self.learn_neighbor(sip, smac, seen);
        }
        if op == ARP_REQUEST && for_us && !claims_ours {
            let mac = self.snap.ifaces[iface].mac;
            let l3 = p.l3;
            // Turn the request into a reply in place, at least Ethernet's 60 bytes. A request
            // can be shorter (42 bytes over veth, where nothing pads) and the buffer's bytes
            // past its end are whatever an earlier packet left there: sent as padding, they
            // would leak another user's traffic (Etherleak, CVE-2003-0001). So bytes 42..60
            // are zeroed first (a fixed-size store), then the headers and the whole 28-byte
            // body written over them where they reach (the body ends at `l3 + 28` >= 42).
            let n = l3 + Arp::<&[u8; 28]>::LEN;
            if !pkt.set_len(n.max(60)) {
                self.drop_pkt(DropReason::NoBuffer);
                return;
            }
            let buf = pkt.data_mut();
            if let Some(pad) = buf.get_mut(42..60) {
                pad.fill(0);
            }
            let reply = |buf: &mut [u8]| -> Result<(), Truncated> {
                let mut eth = EthAddrs::at_mut(buf, 0)?;
                eth.set_dst(smac);
                eth.set_src(mac);
                Arp::at_mut(buf, l3)?.write(ARP_REPLY, (mac, tip4), (smac, sip4));
                Ok(())
            };
            if reply(buf).is_err() {
                self.drop_pkt(DropReason::Malformed);
                return;
            }
            bump(&self.counters.arp_replies, 1);
            self.tx[iface].push(pkt);
            return;
        }
        // Requests for other addresses and replies: the kernel's too, if it has an exception path.
        self.punt(iface, pkt, DropReason::NotForUs);
    }

    pub(super) fn handle_nd(&mut self, iface: usize, mut pkt: Q::Buf, p: &Parsed) {
        let d = pkt.data();
        // Neighbour discovery comes with hop limit 255 (RFC 4861 7.1.1), so from the link.
        let (Some(m), Ok(ip)) = (d.get(p.l4..p.end), Ipv6::at(d, p.l3)) else {
            self.drop_pkt(DropReason::Malformed);
            return;
        };
        if m.len() < 24 || ip.hop_limit() != 255 {
            self.drop_pkt(DropReason::Malformed);
            return;
        }
        let (src6, dst6) = (ip.src(), ip.dst());
        let mut t = [0u8; 16];
        t.copy_from_slice(&m[8..24]);
        let target = parse::v6_to_addr(t);
        let opts = &m[24..];
        // The checks of the message's form first: a few compares. Its checksum, a sum over
        // the whole message, only once the message is one the worker acts on (learns from,
        // answers, counts as a claim of our address): a message it ignores, checksum right or
        // wrong, goes the way of any other it does not handle (the kernel's exception path,
        // which verifies it, else a `not_for_us` drop), so a flood of them does not pay for
        // the sum. Nothing is ever learnt from, answered or counted before the sum verifies.
        if !neigh::nd_options_ok(opts) || !neigh::nd_form_ok(p.icmp_type, m, &src6, &dst6) {
            self.drop_pkt(DropReason::Malformed);
            return;
        }
        let verified = |w: &mut Self| {
            let ok = neigh::nd_checksum_ok(m, &src6, &dst6);
            if !ok {
                w.drop_pkt(DropReason::Malformed);
            }
            ok
        };
        if p.icmp_type == 136 {
            // RFC 4861 section 7.2.5 (Linux's `ndisc_recv_na`): only a solicited advertisement
            // confirms reachability; an unsolicited one is STALE (a new MAC taken, the one the
            // entry holds changes nothing).
            let (solicited, over) = (m[4] & 0x40 != 0, m[4] & 0x20 != 0);
            let seen = if solicited { neigh::Seen::Reachable } else { neigh::Seen::Stale };
            enum Act {
                Learn([u8; 6]),
                Suspect,
            }
            // What the advertisement would do, decided without touching any state.
            let claims_ours = self.is_own(target);
            let act = if claims_ours || !self.nd_may_learn(iface, target) {
                None
            } else {
                match (neigh::nd_lladdr(opts, 2), self.neigh.get(target)) {
                    // No entry: discarded, unless we are resolving the target (Linux's
                    // INCOMPLETE entry) or the advertisement is solicited, the answer to one
                    // of the workers' solicitations (no INCOMPLETE entry is shared, and RSS
                    // may hand the answer to another worker than the one that asked).
                    (Some(mac), None) => {
                        (solicited || self.neigh.resolving(target, self.now)).then_some(Act::Learn(mac))
                    }
                    // Without the Override flag (a proxy's or an anycast answer) another
                    // address does not replace the entry's; a REACHABLE entry becomes STALE.
                    (Some(mac), Some(old)) if old != mac && !over => Some(Act::Suspect),
                    (Some(mac), Some(_)) => Some(Act::Learn(mac)),
                    // A solicited advertisement without the target's link-layer address (how
                    // Linux answers a unicast solicitation, our probe) confirms the entry.
                    (None, Some(old)) if solicited => Some(Act::Learn(old)),
                    (None, _) => None,
                }
            };
            if (claims_ours || act.is_some()) && !verified(self) {
                return;
            }
            if claims_ours {
                // Not learnt: counted (see `own_sender`).
                self.own_sender(target);
            }
            match act {
                Some(Act::Learn(mac)) => self.learn_neighbor(target, mac, seen),
                Some(Act::Suspect) => self.neigh.suspect(target, self.now),
                None => {}
            }
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        // Solicitation.
        let for_us = self.is_own(target);
        // A source claiming one of our own addresses is neither learnt nor answered (the
        // answer would go to our own address, at the claimant's MAC), as ARP (`handle_arp`).
        let claims_ours = p.src != 0 && self.is_own(p.src);
        // Neither for us nor a claim: nothing to learn, answer or count.
        if !for_us && !claims_ours {
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        if !verified(self) {
            return;
        }
        if claims_ours {
            self.own_sender(p.src);
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        let smac = neigh::nd_lladdr(opts, 1);
        if p.src != 0 {
            if let Some(mac) = smac {
                // Created or updated STALE, never confirmed (RFC 4861 section 7.2.3).
                if self.nd_may_learn(iface, p.src) {
                    self.learn_neighbor(p.src, mac, neigh::Seen::Stale);
                }
            }
        }
        let mac = self.snap.ifaces[iface].mac;
        let unspecified = p.src == 0;
        let (dst, dmac) = if unspecified {
            ([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1])
        } else {
            (src6, smac.unwrap_or_else(|| EthAddrs::at(d, 0).map_or([0; 6], |e| e.src())))
        };
        // Flags: solicited (unless unspecified source) + override.
        let flags = if unspecified { 0x20 } else { 0x60 };
        if !pkt.set_len(86) {
            self.drop_pkt(DropReason::NoBuffer);
            return;
        }
        let Ok(n) = neigh::build_nd(pkt.data_mut(), 136, mac, dmac, t, dst, t, flags) else {
            self.drop_pkt(DropReason::NoBuffer);
            return;
        };
        pkt.set_len(n);
        bump(&self.counters.nd_replies, 1);
        self.tx[iface].push(pkt);
    }

    /// Answer an echo request to a VIP or an interface address. Not one whose IPv4 header
    /// checksum fails (Linux drops it in `ip_rcv`), nor one whose ICMP checksum fails (as
    /// `icmp_reply`, `icmpv6_rcv`): the reply's checksums are computed afresh ([`turn_echo`])
    /// and would hand the corruption back valid.
    pub(super) fn echo_reply(&mut self, iface: usize, mut pkt: Q::Buf, p: &Parsed) {
        if !csum::ip_header_ok(pkt.data(), p.l3, p.v6) {
            self.drop_pkt(DropReason::IpBadChecksum);
            return;
        }
        // Nor one from a martian source (Linux drops it in `ip_route_input`, before ICMP):
        // a reply to a subnet's broadcast or a multicast address reaches every host there (a
        // smurf amplifier), one to our own address loops back to us.
        if self.snap.martian_source(p.src) {
            self.drop_pkt(DropReason::MartianSource);
            return;
        }
        let req = if p.v6 { ICMPV6_ECHO_REQUEST } else { ICMP_ECHO_REQUEST };
        if p.icmp_type != req {
            self.drop_pkt(DropReason::NotForUs);
            return;
        }
        if !csum::l4_ok(pkt.data(), p) {
            self.drop_pkt(DropReason::L4BadChecksum);
            return;
        }
        if turn_echo(pkt.data_mut(), p).is_err() {
            self.drop_pkt(DropReason::Malformed);
            return;
        }
        bump(&self.counters.icmp_echo_replies, 1);
        self.tx[iface].push(pkt);
    }

    /// Park a packet until its next hop resolves (bounded).
    pub(super) fn park(&mut self, iface: usize, nh: Addr, pkt: Q::Buf) {
        if self.pending.len() >= MAX_PENDING {
            self.drop_pkt(DropReason::NoNeighbor);
            return;
        }
        self.pending.push(Held { key: nh, iface: iface as u8, buf: pkt, deadline: self.now + PENDING_NS });
    }

    /// A frame the engine does not handle: to the kernel through the interface's exception
    /// path if it has one (at most `[engine] kernel_rate` per second), otherwise a drop for `r`.
    pub(super) fn punt(&mut self, iface: usize, pkt: Q::Buf, r: DropReason) {
        let Some(q) = self.kern_q.get(iface).copied().flatten() else {
            return self.drop_pkt(r);
        };
        if !self.kern_rl.allow(self.now) {
            bump(&self.counters.kernel_limited, 1);
            return self.drop_pkt(r);
        }
        bump(&self.counters.to_kernel, 1);
        self.tx[q].push(pkt);
    }
}

/// An echo request turned into its reply, in place: MACs and addresses exchanged, the
/// TTL / hop limit set to 64, the type set to echo reply, the checksums recomputed.
fn turn_echo(d: &mut [u8], p: &Parsed) -> Result<(), Truncated> {
    EthAddrs::at_mut(d, 0)?.swap();
    let mut ip = IpMut::at_mut(d, p.l3, p.v6)?;
    ip.swap_addrs();
    ip.set_ttl(64);
    Icmp::at_mut(d, p.l4)?.set_kind(if p.v6 { ICMPV6_ECHO_REPLY } else { ICMP_ECHO_REPLY });
    if !p.v6 {
        csum::fill_ipv4(d, p.l3)?;
    }
    csum::fill_l4(d, p)
}
