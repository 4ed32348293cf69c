//! Forwarding a packet of a known connection (a child module of `worker`): the established
//! fast path (`forward_established`, beside the burst's express lane), the general path
//! (`forward`: TCP state, the FTP gateway, SYN proxy, PROXY protocol, translation), the NAT,
//! full NAT, DR and tunnel rewrites and the Ethernet header towards the next hop. `track`
//! and `account` keep the connection's state, expiry and counters.

use super::*;
use crate::wire::view::{Ipv4, Tcp, IPV4_DF};

impl<Q: BufAlloc> Worker<Q> {
    /// [`track`] a packet (frame `d`, parsed as `p`) of connection `idx` travelling in `dir`,
    /// the packet count's high half carried when its low half wrapped.
    #[inline(always)]
    pub(super) fn track_conn(&mut self, idx: u32, dir: Dir, d: &[u8], p: &Parsed) {
        let len = d.len() as u64;
        // A client segment's sequence number, for its connection's window (`track`).
        let seq = if p.proto == PROTO_TCP && dir == Dir::In { Tcp::at(d, p.l4).map_or(0, |t| t.seq()) } else { 0 };
        let t = TrackCtx {
            seq,
            out_of_window: &self.counters.tcp_out_of_window,
            now: self.now,
            snap_gen: self.snap_gen,
            id: self.id,
            snap: &self.snap,
            timeouts: &self.timeouts,
            half_open: &mut self.half_open,
            acc: &mut self.acc,
            acc_base: &self.acc_base,
            acc_dirty: &mut self.acc_dirty,
        };
        if track(self.flows.get_mut(idx), dir, p, len, t) {
            self.flows.carry_pkt(idx, dir == Dir::In);
        }
    }

    /// The established fast path: a packet that arrived on `iface` and the index word `v`
    /// the burst's lookup found for it. `None`: not the fast path's (not addressed to us, a
    /// bare SYN on a known tuple, an expired entry), the caller classifies it. A connection
    /// with anything special (FTP gateway, SYN proxy, PROXY protocol, translation, backup
    /// state, cluster sync, tunnel) takes the general [`Worker::forward`]; the common NAT,
    /// full NAT and DR packet is handled here with one look at its connection.
    #[inline(always)]
    pub(super) fn forward_established(&mut self, iface: usize, v: u32, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        let idx = v >> 1;
        let dir = if v & 1 == 0 { Dir::In } else { Dir::Out };
        // Parsed frames hold at least an Ethernet header. The destination MAC as a 4- and a
        // 2-byte word: ours if multicast/broadcast or the interface's.
        let dst: &[u8; 6] = pkt.data().get(..6)?.try_into().ok()?;
        let ours = dst[0] & 1 == 1
            || self.if_macs.get(iface).is_some_and(|m| {
                u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) == u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]])
                    && u16::from_ne_bytes([m[4], m[5]]) == u16::from_ne_bytes([dst[4], dst[5]])
            });
        // A bare SYN on a known tuple may start a new connection (port reuse): the slow path decides.
        let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let c = self.flows.get(idx);
        if !ours || syn || c.expired(self.now) {
            return None;
        }
        // A client segment on a closing entry while SYN cookies went out lately: it may end a
        // proxied handshake that reuses the tuple (its SYN was answered with a cookie), which
        // the slow path checks (`proxy_reusable`). An established connection pays a compare.
        if p.proto == PROTO_TCP
            && c.state != crate::flow::tcpstate::TcpState::Established
            && dir == Dir::In
            && self.cookie_recent()
            && super::classify::closing(c)
        {
            return None;
        }
        if c.flags & (F_SYNCED | F_ALG | F_SYNPROXY | F_PPROTO | F_XLAT) != 0
            || self.sync_on
            || c.fwd == Forward::Tunnel
        {
            return Some(self.forward(idx, dir, pkt, p));
        }
        // The next hop of this direction, read once: its interface gives the egress MTU
        // (see `forward`; no tunnel overhead here) and, below, the frame's MACs.
        let h = if dir == Dir::In { c.hop_in } else { c.hop_out };
        let hop = self.flows.hop_mac(h);
        let mtu = self.caps.get(hop.iface as usize).map_or(usize::MAX, |c| c.mtu as usize);
        if p.end - p.l3 > mtu {
            return Some(if may_fragment(pkt.data(), p) {
                self.forward_fragmented(idx, dir, pkt, p)
            } else {
                self.too_big(dir, pkt, p, mtu)
            });
        }
        let la = if c.fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
        // The far end this direction rewrites to: the real server (in) or the VIP (out).
        let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
        self.track_conn(idx, dir, pkt.data(), p);
        let c = self.flows.get(idx);
        let d = pkt.data_mut();
        let r = if c.fwd == Forward::Dr { Ok(()) } else { rewrite_conn(c, la, far, dir, d, p) };
        if let Err(r) = r {
            return Some(Next::Drop(r));
        }
        Some(self.l2_write_hop(h, hop, d))
    }

    /// Forward a packet of connection `idx` travelling in `dir`.
    #[inline(always)]
    pub(super) fn forward(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        // Egress MTU (IPVS `ensure_mtu_is_adequate`), before the packet changes any state: one
        // compare on the fast path; a packet too big becomes an ICMP error to its sender.
        let c = self.flows.get(idx);
        // FTP control connections of NAT and full NAT are exempt: the gateway cuts every
        // segment it writes to the egress MTU (`ftp_replace`), and their handshake MSS is
        // clamped to it. In DR and tunnel mode it only reads the client's segments, and the
        // real server's SYN-ACK does not come back through the balancer to be clamped.
        if c.flags & F_ALG == 0 || !c.fwd.two_way() {
            let (egress, over) = match (dir, c.fwd) {
                (Dir::Out, _) => (self.flows.if_out(c), 0),
                (Dir::In, Forward::Tunnel) => {
                    (self.flows.if_in(c), if addr_is_v4(self.flows.rs_of(c).0) { 20 } else { 40 })
                }
                (Dir::In, _) => (self.flows.if_in(c), 0),
            };
            let mtu = self.caps.get(egress as usize).map_or(usize::MAX, |c| c.mtu as usize);
            if p.end - p.l3 + over > mtu {
                // Its sender allows fragmentation: it goes out in fragments (not across
                // families: the translation has its own check, and answers).
                if c.flags & F_XLAT == 0 && may_fragment(pkt.data(), p) {
                    return self.forward_fragmented(idx, dir, pkt, p);
                }
                return self.too_big(dir, pkt, p, mtu.saturating_sub(over));
            }
            // A path MTU towards a tunnel real server learnt from a router (none learnt: one
            // compare).
            if over != 0 && !self.pmtu.is_empty() {
                if let Some(next) = self.tunnel_path_too_big(idx, pkt, p, over) {
                    return next;
                }
            }
        }
        self.forward_body(idx, dir, pkt, p)
    }

    /// A packet of connection `idx` over the egress MTU whose sender allows fragmentation
    /// (IPv4, DF clear): forwarded as any packet, then cut into fragments that fit
    /// ([`Worker::split_out`]). IPVS's `ensure_mtu_is_adequate` lets such a packet through and
    /// Linux's output path (`ip_fragment`) cuts it; in tunnel mode the outer packet is cut
    /// (its DF is the inner packet's, [`encap_ipip`]), the inner one left whole. Not one whose
    /// header checksum fails (Linux drops it in `ip_rcv`): each fragment's header checksum is
    /// computed afresh, which would launder the corruption.
    #[inline(never)]
    pub(super) fn forward_fragmented(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if !csum::ip_header_ok(pkt.data(), p.l3, false) {
            return Next::Drop(DropReason::IpBadChecksum);
        }
        let next = self.forward_body(idx, dir, pkt, p);
        self.split_out(pkt, p.l3, next, usize::MAX)
    }

    /// [`Worker::forward`] after the egress MTU check.
    #[inline(always)]
    fn forward_body(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        // A SYN-proxied client segment waiting for the real server: held as it is, its
        // accounts done once, when it is released (this path again). A real server's
        // segment that does not answer our SYN acceptably, or any segment after the
        // client's reset: dropped (or reset) before any account too.
        let flags = self.flows.get(idx).flags;
        if flags & F_SYNPROXY != 0 {
            if let Some(next) = self.proxy_pending(idx, dir, pkt, p) {
                return next;
            }
        }
        if flags & F_SYNCED != 0 {
            self.adopt(idx);
        }
        // State, timeout, counters.
        let (state_before, mark_before) = (self.flows.get(idx).state, self.flows.get(idx).client_seq_mark());
        self.track_conn(idx, dir, pkt.data(), p);
        // Cluster: a new connection or a state change goes to the peers, once it stands. The
        // FTP gateway may drop or hold a segment, or keep its FIN back (sending a reply without
        // it), and the transition is undone (below): a control connection's change waits for
        // the gateway's word, or a backup would expire the live connection on the FIN_WAIT,
        // CLOSE_WAIT or CLOSE timeout after a failover. (Its PROXY protocol connections skip
        // the gateway.)
        let mut sync_later = false;
        if self.sync_on && (self.flows.get(idx).state != state_before || self.flows.cold(idx).synced_at == 0) {
            if self.flows.get(idx).flags & (F_ALG | F_PPROTO) == F_ALG {
                sync_later = true;
            } else {
                self.sync_conn(idx);
            }
        }
        // FTP gateway on control connections (may resize the payload).
        let c = self.flows.get(idx);
        if c.flags & (F_ALG | F_SYNPROXY | F_PPROTO | F_XLAT) == 0 && c.fwd.two_way() {
            // The common case: NAT or full NAT without the gateway (deltas precomputed).
            return self.rewrite_plain(idx, dir, pkt, p);
        }
        if c.flags & F_SYNPROXY != 0 {
            if let Some(next) = self.proxy_segment(idx, dir, pkt, p) {
                if sync_later {
                    self.sync_moved(idx, state_before);
                }
                return next;
            }
        }
        if self.flows.get(idx).flags & F_PPROTO != 0 {
            return match self.pp_segment(idx, dir, pkt, p) {
                Ok(Some(p2)) => self.forward_rewrite(idx, dir, pkt, &p2),
                Ok(None) => self.forward_rewrite(idx, dir, pkt, p),
                Err(next) => next,
            };
        }
        let c = self.flows.get(idx);
        let (flags, fwd) = (c.flags, c.fwd);
        let ftp_p;
        let p = if flags & F_ALG != 0 {
            // Cluster, full NAT: the session's handling node may be another one.
            if fwd == Forward::Fnat && self.snap.config.cluster.is_some() {
                if let Some(n) = self.alg_redirect(idx, pkt) {
                    if sync_later {
                        self.sync_moved(idx, state_before);
                    }
                    return n;
                }
            }
            let r = self.ftp_segment(idx, dir, pkt, p);
            match &r {
                // Nothing went out (held whole, or dropped: out of the window, a bad checksum):
                // the state must not have seen the segment, as conntrack leaves an invalid one
                // out of its state (a RST or FIN with data far ahead would otherwise close a live
                // control connection it never reached).
                // Nor its sequence mark (a segment far ahead would otherwise teach it while
                // not known, and the next one in sequence be out of its window).
                Err(Next::Drop(_)) => {
                    self.redo_tcp_state(idx, dir, state_before, None);
                    self.flows.get_mut(idx).set_client_seq_mark(mark_before);
                }
                // The gateway kept the FIN back: the state must not have seen it.
                Ok(Some(replaced)) if p.tcp_flags & !replaced.tcp_flags & parse::TCP_FIN != 0 => {
                    self.redo_tcp_state(idx, dir, state_before, Some(p.tcp_flags & !parse::TCP_FIN))
                }
                _ => {}
            }
            if sync_later {
                self.sync_moved(idx, state_before);
            }
            match r {
                Err(n) => return n,
                Ok(None) if flags & (F_SYNPROXY | F_XLAT) == 0 && fwd.two_way() => {
                    // The gateway's common end (a segment it only translated: every tiny one
                    // of a flood): NAT or full NAT as on the fast path, in line.
                    return self.rewrite_plain(idx, dir, pkt, p);
                }
                Ok(None) => p,
                Ok(Some(replaced)) => {
                    ftp_p = replaced;
                    &ftp_p
                }
            }
        } else {
            p
        };
        self.forward_rewrite(idx, dir, pkt, p)
    }

    /// The forwarding step after the gateway: NAT rewrite, DR MACs or IPIP
    /// encapsulation of one (possibly gateway-built) segment of `idx`.
    pub(super) fn forward_rewrite(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if dir == Dir::Out && self.flows.get(idx).flags & F_SYNPROXY != 0 {
            // SYN proxy: the server's sequence numbers into the client's space (our cookie).
            if let Some(delta) = self.flows.cold(idx).proxy.as_deref().map(|x| x.delta) {
                let Ok(mut t) = Tcp::at_mut(pkt.data_mut(), p.l4) else {
                    return Next::Drop(DropReason::Malformed);
                };
                let c = t.shift_seq(delta);
                t.adjust_checksum(c);
            }
        }
        let c = self.flows.get(idx);
        let fwd = c.fwd;
        match (fwd, dir) {
            (Forward::Fnat, _) if c.flags & F_XLAT != 0 => self.xlat(idx, dir, pkt, p),
            (Forward::Nat | Forward::Fnat, _) => {
                let la = if fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
                let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
                let d = pkt.data_mut();
                if let Err(r) = rewrite_conn(c, la, far, dir, d, p) {
                    return Next::Drop(r);
                }
                self.l2_write(idx, dir == Dir::In, d)
            }
            (Forward::Dr, _) => self.l2_out(idx, true, pkt),
            (Forward::Tunnel, _) => {
                let iface = self.flows.if_in(c) as usize;
                let rs = self.flows.rs_of(c).0;
                let Some(src) = self.snap.ifaces[iface].source_for(rs) else {
                    return Next::Drop(DropReason::NoRoute);
                };
                let mtu = self.caps[iface].mtu;
                if !encap_ipip(pkt, p, src, rs, mtu, true, &mut self.ip_ident) {
                    return Next::Drop(DropReason::TooBig);
                }
                let next = self.l2_out(idx, true, pkt);
                // Over the MTU, or over a path MTU learnt towards the real server, with DF
                // clear (`forward` let it through): the outer packet is cut here to the
                // smaller, whatever path brought it.
                let cap = self.tunnel_cut(rs, mtu as usize);
                if pkt.len() - p.l3 > cap {
                    return self.split_out(pkt, p.l3, next, cap);
                }
                next
            }
        }
    }

    /// Full NAT across families: translate the packet to the other side's family (see
    /// [`crate::pipeline::nat64`]). One that outgrows the egress MTU once translated (IPv4 -> IPv6 adds
    /// 20 bytes) goes back to its sender as "fragmentation needed" / "packet too big" with
    /// the MTU its own family may use.
    pub(super) fn xlat(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        let c = self.flows.get(idx);
        let (src, sport, dst, dport, egress) = match dir {
            Dir::In => {
                (self.flows.laddr_of(c), c.lport(), self.flows.rs_of(c).0, self.flows.rs_of(c).1, self.flows.if_in(c))
            }
            Dir::Out => (self.flows.vip_of(c).0, self.flows.vip_of(c).1, c.client(), c.cport, self.flows.if_out(c)),
        };
        let mtu = self.caps.get(egress as usize).map_or(1500, |c| c.mtu as usize);
        let grow = crate::pipeline::nat64::translated_len(p).saturating_sub(p.end - p.l3);
        if crate::pipeline::nat64::translated_len(p) > mtu {
            return self.too_big(dir, pkt, p, mtu.saturating_sub(grow));
        }
        if let Err(r) = crate::pipeline::nat64::translate(pkt, p, src, sport, dst, dport, mtu) {
            return Next::Drop(r);
        }
        self.l2_write(idx, dir == Dir::In, pkt.data_mut())
    }

    /// Set MACs towards the real server (`to_rs`) or the client; holds the
    /// packet while the next hop is resolved.
    #[inline(always)]
    pub(super) fn l2_out(&mut self, idx: u32, to_rs: bool, pkt: &mut Q::Buf) -> Next {
        self.l2_write(idx, to_rs, pkt.data_mut())
    }

    /// NAT or full NAT of a packet of connection `idx` with the precomputed deltas (no
    /// gateway, proxy or translation left to do), then its Ethernet header.
    #[inline(always)]
    pub(super) fn rewrite_plain(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        let c = self.flows.get(idx);
        let la = if c.fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
        let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
        let d = pkt.data_mut();
        if let Err(r) = rewrite_conn(c, la, far, dir, d, p) {
            return Next::Drop(r);
        }
        self.l2_write(idx, dir == Dir::In, d)
    }

    /// [`Worker::l2_out`] on the frame's bytes.
    #[inline(always)]
    pub(super) fn l2_write(&mut self, idx: u32, to_rs: bool, frame: &mut [u8]) -> Next {
        let c = self.flows.get(idx);
        let h = if to_rs { c.hop_in } else { c.hop_out };
        let hop = self.flows.hop_mac(h);
        self.l2_write_hop(h, hop, frame)
    }

    /// [`Worker::l2_write`] with the next hop `h` and what the table holds of it (`hop`)
    /// already read.
    #[inline(always)]
    pub(super) fn l2_write_hop(&mut self, h: u16, hop: flow::HopMac, frame: &mut [u8]) -> Next {
        let gen = self.neigh.gen;
        let iface = hop.iface as usize;
        // Parsed frames hold at least an Ethernet header.
        let Some(Ok::<&mut [u8; 12], _>(eth)) = frame.get_mut(..12).map(|s| s.try_into()) else {
            return Next::Drop(DropReason::Malformed);
        };
        // The header is cached per next hop (shared by every connection through it), valid
        // for one neighbour generation and only once the MAC is known: learning a new
        // neighbour does not change `gen` (see `NeighCache::learn`), so a hop still missing
        // its MAC looks it up again on its next packet.
        if hop.mac_gen == gen {
            *eth = hop.hdr;
            return Next::Tx(iface);
        }
        let Some(src_mac) = self.if_macs.get(iface) else {
            return Next::Drop(DropReason::Malformed);
        };
        eth[6..12].copy_from_slice(src_mac);
        let nh = self.flows.hop_nh(h);
        match if h == flow::NO_HOP { None } else { self.neigh.resolve(nh) } {
            Some(mac) if mac != [0; 6] => {
                eth[0..6].copy_from_slice(&mac);
                // An interface without caps gets MTU 0: the express lane leaves its packets
                // to this path.
                let mtu = self.caps.get(iface).map_or(0, |c| c.mtu);
                self.flows.set_hop_l2(h, *eth, mtu, gen);
                Next::Tx(iface)
            }
            _ => {
                self.solicit(iface, nh);
                Next::Park(iface, nh)
            }
        }
    }

    /// The largest outer packet to send to tunnel real server `rs` over an interface of MTU
    /// `mtu`: the MTU, or a smaller path MTU learnt towards the real server
    /// ([`crate::pipeline::pmtu`]) for an IPv4 outer header. Linux's output path cuts a
    /// DF-clear packet to the route's MTU, which a router's report lowered; sent whole, it
    /// would be cut by that router, or lost where the router does not fragment. (The
    /// balancer does not fragment an IPv6 outer packet.)
    pub(super) fn tunnel_cut(&mut self, rs: Addr, mtu: usize) -> usize {
        if self.pmtu.is_empty() || !addr_is_v4(rs) {
            return mtu;
        }
        self.pmtu.get(rs, self.now).map_or(mtu, |path| mtu.min(path as usize))
    }

    /// Cut the IPv4 packet at `l3` of `pkt`, about to go out as `next` says (sent, or parked
    /// for its next hop), into fragments that fit its interface's MTU and `cap` ([`ipfrag`]); a packet
    /// that fits, or another verdict, is left as it is. The first fragment is `pkt`'s buffer
    /// cut short; the later ones are built in buffers from the interface's pool before any
    /// goes out (no buffer for one: the packet is a `no_buffer` drop, no fragment sent), and
    /// leave in order: the first and the middle ones here, the last in `pkt`, for the
    /// caller's [`Worker::finish`] with the verdict returned. Counted in `frags_made`.
    ///
    /// [`ipfrag`]: crate::wire::ipfrag
    #[inline(never)]
    pub(super) fn split_out(&mut self, pkt: &mut Q::Buf, l3: usize, next: Next, cap: usize) -> Next {
        use crate::wire::ipfrag::{self, Unfit};
        let iface = match next {
            Next::Tx(i) | Next::Park(i, _) => i,
            _ => return next,
        };
        let mtu = self.caps.get(iface).map_or(usize::MAX, |c| c.mtu as usize).min(cap);
        let plan = match ipfrag::plan(pkt.data(), l3, mtu) {
            Ok(Some(plan)) => plan,
            Ok(None) => return next,
            Err(Unfit::Malformed) => return Next::Drop(DropReason::Malformed),
            // DF set, or an MTU under 28 bytes: the callers check DF first.
            Err(Unfit::DontFragment | Unfit::MtuTooSmall) => return Next::Drop(DropReason::TooBig),
        };
        let mut later = std::mem::take(&mut self.frag_out);
        let mut built = Ok(());
        for k in 1..plan.count() {
            let Some(mut b) = self.allocs.get_mut(iface).and_then(|a| a.alloc()) else {
                built = Err(DropReason::NoBuffer);
                break;
            };
            if !b.set_len(plan.frame_len(k)) || plan.write(pkt.data(), k, b.data_mut()).is_err() {
                built = Err(DropReason::NoBuffer);
                break;
            }
            later.push(b);
        }
        if built.is_ok() {
            match plan.first_in_place(pkt.data_mut()) {
                Ok(n) if pkt.set_len(n) => {}
                _ => built = Err(DropReason::Malformed),
            }
        }
        if let Err(r) = built {
            later.clear();
            self.frag_out = later;
            return Next::Drop(r);
        }
        bump(&self.counters.frags_made, plan.count() as u64);
        if let Some(last) = later.pop() {
            let first = std::mem::replace(pkt, last);
            for b in std::iter::once(first).chain(later.drain(..)) {
                match next {
                    Next::Tx(i) => self.tx[i].push(b),
                    Next::Park(i, nh) => self.park(i, nh, b),
                    _ => {}
                }
            }
        }
        self.frag_out = later;
        next
    }

    #[inline(always)]
    pub(super) fn finish(&mut self, pkt: Q::Buf, next: Next) {
        match next {
            Next::Tx(i) => self.tx[i].push(pkt),
            Next::Drop(r) => self.drop_pkt(r),
            Next::Park(i, nh) => self.park(i, nh, pkt),
            Next::ProxyHold(idx) => {
                if self.proxy_held.len() >= MAX_PROXY_HELD {
                    self.drop_pkt(DropReason::ProxyWait);
                } else {
                    let gen = self.flows.get(idx).gen;
                    let deadline = self.now + PROXY_HOLD_NS;
                    self.proxy_held.push(Held { key: (idx, gen), iface: 0, buf: pkt, deadline });
                }
            }
        }
        if let Some(idx) = self.proxy_release.take() {
            self.release_proxied(idx);
        }
    }
}

/// What [`track`] needs of the worker besides the connection (disjoint borrows of its fields).
struct TrackCtx<'a> {
    /// A client TCP segment's sequence number (0 for another packet).
    seq: u32,
    out_of_window: &'a std::sync::atomic::AtomicU64,
    now: u64,
    snap_gen: u16,
    id: usize,
    snap: &'a Snapshot,
    timeouts: &'a [u64; crate::flow::tcpstate::N_STATES],
    half_open: &'a mut u32,
    acc: &'a mut [SvcAcc],
    acc_base: &'a [u32],
    acc_dirty: &'a mut Vec<u32>,
}

/// One forwarded packet (`len` bytes) of connection `c` travelling in `dir`: TCP state (and
/// the scheduler's active/inactive counts, the SYN_RECV count), expiry, the packet count and
/// the per-(service, real server) traffic deltas. True if the packet count's low half
/// wrapped (the caller carries it, [`FlowTable::carry_pkt`]).
#[inline(always)]
fn track(c: &mut flow::Conn, dir: Dir, p: &Parsed, len: u64, t: TrackCtx<'_>) -> bool {
    // ESTABLISHED with an ACK or no flag at all stays ESTABLISHED whatever the direction
    // (`tcpstate::next`'s own shortcut, tested there): nothing to count either.
    let mut unchanged = c.state == crate::flow::tcpstate::TcpState::Established
        && p.tcp_flags & (parse::TCP_FIN | TCP_SYN | parse::TCP_RST) == 0;
    // A client segment: within its connection's sequence window, it moves the mark; outside
    // it (a blind reset or FIN), it goes on but leaves the state (`Conn::client_seq_ok`).
    if p.proto == PROTO_TCP && dir == Dir::In {
        if c.client_seq_ok(t.seq) {
            c.note_client_seq(t.seq);
        } else if !unchanged {
            bump(t.out_of_window, 1);
            unchanged = true;
        }
    }
    if p.proto == PROTO_TCP && !unchanged {
        let d = match (dir, c.fwd) {
            (Dir::Out, _) => Direction::Output,
            (Dir::In, f) if f.two_way() => Direction::Input,
            (Dir::In, _) => Direction::InputOnly,
        };
        let old = c.state;
        let new = tcpstate::next(old, d, p.tcp_flags);
        if new != old {
            c.state = new;
            if old == crate::flow::tcpstate::TcpState::SynRecv {
                *t.half_open = t.half_open.saturating_sub(1);
            } else if new == crate::flow::tcpstate::TcpState::SynRecv {
                *t.half_open += 1;
            }
            if c.snap_gen == t.snap_gen && c.flags & F_COUNTED != 0 {
                let counts = &t.snap.conn_counts[c.svc as usize];
                let was = c.flags & F_ACTIVE_COUNTED != 0;
                let is = new.is_active();
                if was && !is {
                    counts.dec_active(t.id, c.dest as usize);
                    counts.inc_inactive(t.id, c.dest as usize);
                    c.flags &= !F_ACTIVE_COUNTED;
                } else if !was && is {
                    counts.dec_inactive(t.id, c.dest as usize);
                    counts.inc_active(t.id, c.dest as usize);
                    c.flags |= F_ACTIVE_COUNTED;
                }
            }
        }
    }
    account(c, dir, len, t.now, t.timeouts, t.acc, t.acc_base, t.acc_dirty)
}

/// The part of [`track`] every forwarded packet needs (all the express lane needs): the
/// expiry from the connection's state, the packet count and the service / real-server
/// traffic. True if the packet count's low half wrapped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn account(
    c: &mut flow::Conn,
    dir: Dir,
    len: u64,
    now: u64,
    timeouts: &[u64; crate::flow::tcpstate::N_STATES],
    acc: &mut [SvcAcc],
    acc_base: &[u32],
    acc_dirty: &mut Vec<u32>,
) -> bool {
    // The worker's timeouts are clamped to `MAX_SPAN_NS` (`apply_snapshot`).
    c.expire_after(now, timeouts[c.state as usize]);
    // Packet count (the high halves live in the cold array).
    let n = if dir == Dir::In { &mut c.pkts_in } else { &mut c.pkts_out };
    *n = n.wrapping_add(1);
    let wrapped = *n == 0;
    // Service / real-server traffic: worker-local deltas, folded
    // into the shared counters every ~100 ms (see `flush_svc_counters`).
    let slot = acc_base.get(c.svc as usize).map_or(u32::MAX, |b| b + c.dest as u32);
    if let Some(a) = acc.get_mut(slot as usize) {
        if a.in_packets | a.out_packets == 0 {
            acc_dirty.push((c.svc as u32) << 16 | c.dest as u32);
        }
        match dir {
            Dir::In => {
                a.in_packets += 1;
                a.in_bytes += len;
            }
            Dir::Out => {
                a.out_packets += 1;
                a.out_bytes += len;
            }
        }
    }
    wrapped
}

/// The NAT / full NAT rewrite of a packet of `c` travelling in `dir` (precomputed checksum
/// deltas; no gateway, proxy or translation): `la` is `c`'s local address (full NAT).
#[inline(always)]
pub(super) fn rewrite_conn(
    c: &flow::Conn,
    la: Addr,
    far: (Addr, u16),
    dir: Dir,
    d: &mut [u8],
    p: &Parsed,
) -> Result<(), DropReason> {
    let (fa, fp) = far;
    match (c.fwd, dir) {
        (Forward::Fnat, Dir::In) => rewrite_fnat(d, p, la, c.lport(), fa, fp, c.l3_in, c.l4_in()),
        (Forward::Fnat, Dir::Out) => rewrite_fnat(d, p, fa, fp, c.client(), c.cport, c.l3_out(), c.l4_out()),
        (_, Dir::In) => rewrite_nat(d, p, true, fa, fp, c.l3_in, c.l4_in()),
        (_, Dir::Out) => rewrite_nat(d, p, false, fa, fp, c.l3_out(), c.l4_out()),
    }
}

/// May the packet `p` of frame `d` be sent in fragments? IPv4 with DF clear: its sender
/// allows it (RFC 791), and Linux's output path does it. Never IPv6: only its source may
/// fragment it (RFC 8200 section 5); it gets "packet too big".
#[inline]
fn may_fragment(d: &[u8], p: &Parsed) -> bool {
    !p.v6 && Ipv4::at(d, p.l3).is_ok_and(|h| h.frag_word() & IPV4_DF == 0)
}
