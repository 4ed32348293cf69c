//! Classification (a child module of `worker`): what a packet is once the burst's passes
//! did not forward it. `process_parsed` takes the lookup the passes made (or makes it),
//! forwards a known connection's packet, and sends the rest to `process_slow`: frames for
//! the balancer itself (ARP/ND, echo, the kernel's exception path), ICMP errors
//! (`icmp_error_in`), packets another worker owns (handed over), the first packet of a
//! connection to a VIP or from a real server, FTP data connections the gateway expects,
//! and cluster recreation of a peer's connection.

use super::*;

impl<Q: BufAlloc> Worker<Q> {
    /// Classify and forward one packet received on interface `iface`.
    pub fn process(&mut self, iface: usize, pkt: Q::Buf, handed: bool) {
        let r = parse::parse(pkt.data());
        self.process_parsed(iface, pkt, handed, &r, 0, NONE, false);
        self.flush_svc_counters();
    }

    /// [`Worker::process`] with the parse result, the flow hash (0: not
    /// computed) and the index word found earlier in the burst (`NONE`:
    /// none) from the burst's first passes; `confirmed`: that word is known to be the
    /// packet's connection (the express lane compared the key).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn process_parsed(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        handed: bool,
        parsed: &Result<Parsed, parse::ParseError>,
        mut hash: u64,
        hint: u32,
        confirmed: bool,
    ) {
        // Fast path: an established TCP/UDP connection of this worker's
        // table. Only the owner of a connection ever creates it, so a hit
        // also settles ownership (no VIP/local classification, no handoff
        // check). Everything else (misses, expired entries, ARP/ND, ICMP)
        // takes the classification path below, as before.
        // The burst's lookup pass missed and nothing with this hash was inserted since: a
        // known miss (a flood of unknown flows, or a burst of SYNs each creating its
        // connection, skips a second, cache-missing probe).
        let mut known_miss = hint == NONE && hash != 0 && self.flows.still_missing(hash, self.hint_ver);
        if let Ok(p) = parsed {
            if p.proto == PROTO_TCP || p.proto == PROTO_UDP {
                // The hint from the burst's second pass is the first index word whose tag
                // matches (its connection's line prefetched, the key not yet compared): the
                // key is confirmed here, now that the line has arrived. A failed candidate
                // is looked up in full, and so is a miss once the table changed (an earlier
                // packet of the burst may have created the connection).
                // `confirmed`: the express lane compared the key already.
                // The key is built where it is compared (a known miss, a burst of SYNs, does
                // not need it).
                let found = if confirmed || (hint != NONE && self.flows.word_matches(hint, &flow_key(p))) {
                    Some(hint)
                } else if known_miss {
                    // No tag on the probe sequence and no key of this hash inserted since.
                    None
                } else {
                    let key = flow_key(p);
                    if hash == 0 {
                        hash = self.flows.hash(&key);
                    }
                    let found = self.flows.lookup_word(&key, hash);
                    // A miss now is as good as the lookup pass's (nothing changes the table
                    // before `process_slow` looks again).
                    known_miss = found.is_none();
                    found
                };
                if let Some(v) = found {
                    match self.forward_established(iface, v, &mut pkt, p) {
                        // The common end: straight onto its transmit queue (`finish` minus
                        // the cases that cannot be; the SYN proxy's release only follows
                        // its own connections' packets, which take `forward_general`).
                        Some(Next::Tx(t)) if self.proxy_release.is_none() => {
                            match self.tx.get_mut(t) {
                                Some(q) => q.push(pkt),
                                None => self.finish(pkt, Next::Tx(t)),
                            }
                            return;
                        }
                        Some(next) => {
                            self.finish(pkt, next);
                            return;
                        }
                        None => {}
                    }
                }
            }
        }
        self.process_slow(iface, pkt, handed, parsed, hash, known_miss)
    }

    /// Everything but an established connection's packet: classification
    /// (VIP, local address, ARP/ND, ICMP), handoff to the owner, new
    /// connections, expired entries.
    #[inline(never)]
    pub(super) fn process_slow(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        handed: bool,
        parsed: &Result<Parsed, parse::ParseError>,
        hash: u64,
        known_miss: bool,
    ) {
        let p = match parsed {
            Ok(p) => p,
            Err(parse::ParseError::Fragment) => return self.fragment(iface, pkt, handed),
            // Another protocol (LLDP, ...): the kernel's, if it has an exception path.
            Err(parse::ParseError::Unsupported) => return self.punt(iface, pkt, DropReason::Unsupported),
            Err(e) => {
                self.drop_pkt(match *e {
                    parse::ParseError::Malformed => DropReason::Malformed,
                    parse::ParseError::Unsupported => DropReason::Unsupported,
                    parse::ParseError::Fragment => DropReason::Fragment,
                });
                return;
            }
        };
        // Frames for other hosts (flooded by a switch) are not ours.
        let dmac = &pkt.data()[0..6];
        let ours = dmac[0] & 1 == 1 || self.snap.ifaces.get(iface).is_some_and(|i| i.mac == dmac);
        if !ours {
            self.drop_pkt(DropReason::NotForUs);
            return;
        }
        if p.arp {
            return self.handle_arp(iface, pkt, p);
        }
        if p.v6 && p.proto == PROTO_ICMPV6 && (p.icmp_type == 135 || p.icmp_type == 136) {
            return self.handle_nd(iface, pkt, p);
        }
        let info = match self.addr_memo {
            Some((a, info)) if a == p.dst => info,
            _ => {
                let info = self.snap.addr_info(p.dst);
                self.addr_memo = Some((p.dst, info));
                info
            }
        };
        let kind = info.kind;
        let dst_vip = kind & ADDR_VIP != 0;
        let is_icmp = p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6;
        let icmp_err = is_icmp && icmp_is_error(p.v6, p.icmp_type);
        let local = kind & ADDR_LOCAL != 0;
        if (local || dst_vip) && is_icmp && icmp_is_echo(p.v6, p.icmp_type) {
            return self.echo_reply(iface, pkt, p);
        }
        // Full NAT: a reply (or an ICMP error about our packet) to a local address.
        let laddr_range = if dst_vip {
            None
        } else if kind & ADDR_LADDR != 0 {
            Some(self.snap.port_range)
        } else if self.retired.is_empty() {
            None
        } else {
            self.laddr_range(p.dst)
        };
        let to_laddr = laddr_range.is_some() && (p.proto == PROTO_TCP || p.proto == PROTO_UDP || icmp_err);
        if (local || kind & ADDR_HOST != 0) && !dst_vip && !to_laddr {
            // The engine's own address, not a service (BGP, BFD on it), or the kernel's own
            // address beside it on an AF_PACKET port (which has its copy): the kernel's, not a
            // connection the engine lost (`no_flow`). An error to our own address about a tunnel
            // packet we sent is for the connection's client (path MTU discovery).
            if icmp_err && local {
                match parse::parse_tunnel_quote(pkt.data(), p) {
                    Ok(Some(t)) => return self.tunnel_icmp_error(iface, pkt, p, &t, handed),
                    Ok(None) => {}
                    Err(e) => {
                        return self.drop_pkt(match e {
                            parse::ParseError::Fragment => DropReason::Fragment,
                            parse::ParseError::Unsupported => DropReason::Unsupported,
                            parse::ParseError::Malformed => DropReason::Malformed,
                        })
                    }
                }
            }
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        if icmp_err {
            return self.icmp_error_in(iface, pkt, p, dst_vip, to_laddr.then_some(laddr_range).flatten(), handed);
        }
        // The client this packet belongs to decides the owning worker.
        if !handed && self.workers > 1 {
            let owner = match laddr_range {
                // The local port names the worker that opened the connection.
                Some(range) if to_laddr => self.lport_owner_at(range, p.dport),
                _ => owner_of(if dst_vip { p.src } else { p.dst }, self.workers),
            };
            if owner != self.id {
                // A SYN the proxy answers statelessly: here, not at the owner.
                if dst_vip && p.proto == PROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK | parse::TCP_RST) == TCP_SYN {
                    if let Some(next) = self.syn_cookie_here(iface, &mut pkt, p) {
                        return self.finish(pkt, next);
                    }
                }
                bump(&self.counters.handoff_out, 1);
                self.hand_off(owner, iface as u8, pkt);
                return;
            }
        }
        if p.proto != PROTO_TCP && p.proto != PROTO_UDP {
            // OSPF, VRRP, router advertisements, echo to the kernel's address, ...
            if dst_vip {
                self.drop_pkt(DropReason::Unsupported);
                return;
            }
            return self.punt(iface, pkt, DropReason::Unsupported);
        }
        if known_miss
            && dst_vip
            && p.proto == PROTO_TCP
            && p.tcp_flags & TCP_SYN == 0
            && !self.cookie_recent()
            && self.snap.config.cluster.is_none()
        {
            // A stray segment to a VIP: no SYN, no connection (an ACK flood, or a connection
            // that expired or another balancer held). Without a cookie sent lately (the SYN
            // proxy's handshake end or a verifying reset) and without a cluster (whose peers'
            // connections are recreated, `cluster_recreate`), nothing below could take it:
            // dropped here as `new_inbound_svc` would, without its look-ups, so a flood of
            // them costs little more than a lookup.
            self.drop_pkt(DropReason::NoFlow);
            return;
        }
        // The key is built where it is used: a known miss's goes straight into the table's
        // note (no copy of it on the stack first).
        let hash = if hash != 0 { hash } else { self.flows.hash(&flow_key(p)) };
        let found = if known_miss {
            // An insert of this key right after only looks for the first empty slot.
            self.flows.note_miss(&flow_key(p), hash);
            None
        } else {
            self.flows.lookup_for_insert(&flow_key(p), hash)
        };
        let next = match found {
            Some((idx, dir)) => {
                if dst_vip && dir == Dir::In && self.reusable(idx, p) {
                    // IPVS conn_reuse_mode: a new SYN on the tuple of a closing connection starts
                    // a new one (new scheduling decision, new gateway session); the old state,
                    // its FTP expectations and pins go. Data connections are left alone, as
                    // IPVS leaves "controlled" connections.
                    // A new connection all the same: the SYN proxy answers it first (the
                    // closing entry stays until the client's ACK proves the handshake).
                    if let Some(next) = self.syn_proxy(iface, &mut pkt, p, None, None) {
                        return self.finish(pkt, next);
                    }
                    self.replace_closing(idx);
                    let next = self.new_inbound(&mut pkt, p);
                    return self.finish(pkt, next);
                }
                if dst_vip && dir == Dir::In && self.proxy_reusable(idx, p) {
                    // The last segment of a proxied handshake on such a tuple (its SYN was
                    // answered with a cookie, above): a valid cookie replaces the closing entry.
                    if let Some(next) = self.syn_proxy(iface, &mut pkt, p, None, Some(idx)) {
                        return self.finish(pkt, next);
                    }
                }
                if self.flows.get(idx).expired(self.now) {
                    self.expire(idx, self.now);
                    if self.flows.try_get(idx).is_some_and(|c| c.live) {
                        self.forward(idx, dir, &mut pkt, p)
                    } else if dst_vip {
                        // A new connection: through the SYN proxy as one with no entry at all.
                        match self.syn_proxy(iface, &mut pkt, p, None, None) {
                            Some(next) => next,
                            None => self.new_inbound(&mut pkt, p),
                        }
                    } else {
                        self.new_outbound(&mut pkt, p)
                    }
                } else {
                    self.forward(idx, dir, &mut pkt, p)
                }
            }
            None if dst_vip && self.snap.martian_source(p.src) => Next::Drop(DropReason::MartianSource),
            None if dst_vip && !self.snap.reverse_path_ok(iface, p.src) => Next::Drop(DropReason::RpFilter),
            None if dst_vip => {
                // A connection's first SYN: its service is looked up once for the SYN proxy and
                // the scheduler (other segments may not need it: looked up where they do).
                let syn = p.proto == PROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
                // (Not `syn.then(..)`: that closure stayed a call.)
                let svc = if syn { Some(self.snap.service_at(&info, p.proto, p.dport)) } else { None };
                // A SYN to a service without the SYN proxy: nothing for it to look at (nor
                // the scheduler's path checks its source first, `source_refused`). With it, a
                // source the service's lists refuse: the SYN proxy does not answer either.
                let no_proxy = match svc {
                    Some(Some(si)) => match self.snap.services.get(si) {
                        Some(s) if s.syn_proxy == ferrovs_cfg::SynProxy::Off => true,
                        Some(s) if !s.admits(p.src) => {
                            let next = self.refuse(si, DropReason::SourceDenied);
                            return self.finish(pkt, next);
                        }
                        _ => false,
                    },
                    _ => false,
                };
                match if no_proxy { None } else { self.syn_proxy(iface, &mut pkt, p, svc, None) } {
                    Some(next) => next,
                    None => self.new_inbound_svc(&mut pkt, p, svc),
                }
            }
            None => match self.new_outbound(&mut pkt, p) {
                // No connection, no expectation, not a service: the kernel's (its own
                // address, or a host it forwards for), if there is an exception path.
                Next::Drop(DropReason::NoFlow) if !to_laddr => return self.punt(iface, pkt, DropReason::NoFlow),
                next => next,
            },
        };
        // A new connection's first packet usually goes out: straight onto its queue, as in
        // `process_parsed`, not through the whole of `finish` (unless a SYN-proxied
        // connection's held packets are to be released after it).
        match next {
            Next::Tx(t) if t < self.tx.len() && self.proxy_release.is_none() => self.tx[t].push(pkt),
            next => self.finish(pkt, next),
        }
    }

    /// An ICMP error that reached [`Worker::process_slow`] (to a VIP, or to a local address:
    /// `laddr` is then the local addresses' port range): the packet it quotes parsed, handed
    /// to the worker that owns the quoted connection, else [`Worker::icmp_error`]. Out of
    /// line, so the common TCP/UDP path carries no quoted packet.
    #[inline(never)]
    pub(super) fn icmp_error_in(
        &mut self,
        iface: usize,
        pkt: Q::Buf,
        p: &Parsed,
        dst_vip: bool,
        laddr: Option<ferrovs_cfg::PortRange>,
        handed: bool,
    ) {
        let inner = match parse::parse_inner(pkt.data(), p) {
            Ok(i) => i,
            Err(e) => {
                self.drop_pkt(match e {
                    parse::ParseError::Fragment => DropReason::Fragment,
                    _ => DropReason::Malformed,
                });
                return;
            }
        };
        if !handed && self.workers > 1 {
            let owner = match laddr {
                // The quoted packet's local port names the worker that opened the connection.
                Some(range) => self.lport_owner_at(range, inner.sport),
                // The client: the quoted packet went to it (to a VIP), else this error is for it.
                None => owner_of(if dst_vip { inner.dst } else { p.dst }, self.workers),
            };
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                self.hand_off(owner, iface as u8, pkt);
                return;
            }
        }
        self.icmp_error(pkt, p, &inner, dst_vip)
    }

    /// A bare SYN from the client on connection `idx` that is closing (TIME_WAIT, CLOSE,
    /// CLOSE_WAIT, LAST_ACK; FIN_WAIT too where the balancer sees only the client's side) and
    /// is not an FTP data connection: the tuple is being reused.
    ///
    /// Direct routing and tunnels see the client's segments only, so a connection the client
    /// closed stays in FIN_WAIT (its FIN, then its ACK of the server's FIN) for the FIN_WAIT
    /// timeout. The client, whose side is gone once it acked the server's FIN (the server
    /// closed first and holds TIME_WAIT), may pick the port again at once: the new connection
    /// must be scheduled afresh, not sent to the old real server, which may be down or
    /// quiesced by now (IPVS does this with `conn_reuse_mode` bit 2, off by default there).
    pub(super) fn reusable(&self, idx: u32, p: &Parsed) -> bool {
        p.proto == PROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && closing(self.flows.get(idx))
    }

    /// A client segment without SYN on closing connection `idx` (see [`Worker::reusable`])
    /// while SYN cookies went out lately: it may be the end of a proxied handshake reusing
    /// the tuple (a cookie ACK, or a DR/tunnel verifying reset), which
    /// [`Worker::syn_proxy`] checks before the old entry may have it.
    pub(super) fn proxy_reusable(&self, idx: u32, p: &Parsed) -> bool {
        p.proto == PROTO_TCP
            && p.tcp_flags & TCP_SYN == 0
            && p.tcp_flags & (TCP_ACK | parse::TCP_RST) != 0
            && self.cookie_recent()
            && closing(self.flows.get(idx))
    }

    /// A SYN reused the tuple of closing connection `idx`: it goes (counted in
    /// `flows_reused`, and `control_reused` for an FTP control connection).
    pub(super) fn replace_closing(&mut self, idx: u32) {
        let c = self.flows.get(idx);
        if self.flows.cold(idx).alg.is_some() {
            if let Some(sc) = self.svc_counters.get(c.svc as usize) {
                bump(&sc.ftp.control_reused, 1);
            }
        }
        bump(&self.counters.flows_reused, 1);
        self.remove_conn(idx, false);
    }
}

/// Is `c` closing, its tuple free for a client's new connection (see [`Worker::reusable`])?
#[inline(always)]
pub(super) fn closing(c: &flow::Conn) -> bool {
    use crate::flow::tcpstate::TcpState as S;
    c.flags & F_DATA == 0
        && match c.state {
            S::TimeWait | S::Close | S::CloseWait | S::LastAck => true,
            S::FinWait => !c.fwd.two_way(),
            _ => false,
        }
}
