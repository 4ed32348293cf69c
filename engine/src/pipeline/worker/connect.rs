//! New connections (a child module of `worker`): a first packet to a VIP is scheduled to a
//! real server (`schedule`: persistence, the scheduler, the service's limits) and becomes a
//! connection (`create_conn`: the flow table entry with its keys, next hops and checksum
//! deltas); FTP data connections the gateway expects (active and passive, every forwarding
//! mode) are linked to their control connection; a closing entry on a reused tuple is freed.

use super::*;

impl<Q: BufAlloc> Worker<Q> {
    /// Pick a real server and create a connection for a first packet to a VIP.
    pub(super) fn new_inbound(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        self.new_inbound_svc(pkt, p, None)
    }

    /// [`Worker::new_inbound`] with the service of (VIP, protocol, port) if the caller looked
    /// it up already (`Some`).
    pub(super) fn new_inbound_svc(&mut self, pkt: &mut Q::Buf, p: &Parsed, svc: Option<Option<usize>>) -> Next {
        if p.proto == PROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
            return self.dr_active_data(pkt, p);
        }
        let snap = &self.snap;
        let owner = svc.unwrap_or_else(|| snap.service(p.dst, p.proto, p.dport));
        // 1. FTP expectations and session pins.
        let mut chosen: Option<(usize, usize, Addr, u16, u32, u32, bool)> = None; // svc, dest, rs, rport, parent, gen, data
        if p.proto == PROTO_TCP {
            // A port another service owns is that service's: DR passive expectations and TLS
            // pins (which name no port) never take it over; the FTP service's own ports (a
            // second control connection of a TLS client) follow the pin.
            let mut v = None;
            if !self.expect.is_empty() {
                v = self.take_expected(&ExpKey::Passive(p.src, p.dst, p.dport));
                if v.is_none() && owner.is_none() {
                    v = self.take_expected(&ExpKey::PassiveAny(p.src, p.dst));
                }
            }
            if let Some(v) = v {
                chosen = Some((
                    v.svc as usize,
                    v.dest as usize,
                    v.rs,
                    v.rport.unwrap_or(p.dport),
                    v.parent,
                    v.parent_gen,
                    true,
                ));
            } else if let Some(pin) =
                (self.expect.pins() > 0).then(|| self.expect.get_pin(p.src, p.dst).copied()).flatten()
            {
                let alive = self.flows.try_get(pin.parent).is_some_and(|c| c.gen == pin.parent_gen);
                if alive && owner.is_none() {
                    chosen =
                        Some((pin.svc as usize, pin.dest as usize, pin.rs, p.dport, pin.parent, pin.parent_gen, true));
                } else if alive && owner == Some(pin.svc as usize) {
                    // Another control connection of the pinned client: same real server, its
                    // own gateway session, no data-connection link.
                    let d = &self.snap.services[pin.svc as usize].dests[pin.dest as usize];
                    let rport = d.port.unwrap_or(p.dport);
                    chosen = Some((pin.svc as usize, pin.dest as usize, pin.rs, rport, NONE, 0, false));
                }
            }
        }
        // 2. The service and its scheduler.
        if chosen.is_none() {
            let owned = owner;
            // In a cluster, an FTP data connection this node holds no expectation for (its
            // control connection went through another node) follows the Maglev choice.
            let Some(si) = owned.or_else(|| self.cluster_service(p)) else {
                return Next::Drop(DropReason::NoService);
            };
            if self.snap.services[si].source_policy {
                if let Some(r) = self.source_refused(si, p.src) {
                    return self.refuse(si, r);
                }
            }
            let Some(di) = self.schedule(si, p) else {
                return self.refuse(si, DropReason::NoRealServer);
            };
            let d = &self.snap.services[si].dests[di];
            let rport = if owned.is_some() { d.port.unwrap_or(p.dport) } else { p.dport };
            chosen = Some((si, di, d.addr, rport, NONE, 0, owned.is_none()));
        }
        let (si, di, rs, rport, parent, parent_gen, data) = chosen.expect("set above");
        // An FTP data connection of a full-NAT session leaves from its control connection's
        // local address (vsftpd refuses data connections from another address).
        let local = match if data { self.flows.try_get(parent) } else { None } {
            Some(c) if c.gen == parent_gen && c.fwd == Forward::Fnat => Local::Prefer(self.flows.laddr_of(c)),
            _ => Local::Any,
        };
        let idx = match self.create_conn(si, di, p.src, p.sport, p.dst, p.dport, rs, rport, local) {
            Ok(i) => i,
            Err(r) => return self.refuse(si, r),
        };
        if data {
            self.link_parent(idx, parent, parent_gen);
        }
        // An FTP control connection gets its gateway.
        let svc = &self.snap.services[si];
        let svc_one_packet = svc.one_packet;
        if !data && p.proto == PROTO_TCP && svc.is_ftp_control(p.dport) {
            self.start_ftp_session(si, di, idx, None);
            bump(&self.svc_counters[si].ftp.control_sessions, 1);
        }
        // One-packet scheduling: whether the datagram comes in fragments, read before the
        // frame is rewritten (or cut).
        let one_packet = (svc_one_packet && p.proto == PROTO_UDP)
            .then(|| frag::is_fragment(pkt.data(), p) && frag::parse_fragment(pkt.data()).is_ok_and(|f| f.more));
        let next = self.forward(idx, Dir::In, pkt, p);
        if let Some(more) = one_packet {
            self.one_packet_done(idx, more);
        }
        next
    }

    /// A new connection service `si` refuses for `r`: counted for the service too
    /// ([`crate::pipeline::counters::REFUSALS`]), and dropped.
    #[cold]
    #[inline(never)]
    pub(super) fn refuse(&self, si: usize, r: DropReason) -> Next {
        if let Some(sc) = self.svc_counters.get(si) {
            sc.refused.count(r);
        }
        Next::Drop(r)
    }

    /// Why service `si` refuses a new connection from `src`, if it does: its access lists
    /// (`allow_from`, `deny_from`, `[engine] deny_from`), then its `source_conn_rate` (a
    /// token spent if not). Out of line: only services with either call it.
    #[inline(never)]
    fn source_refused(&mut self, si: usize, src: Addr) -> Option<DropReason> {
        if !self.snap.services.get(si)?.admits(src) {
            return Some(DropReason::SourceDenied);
        }
        let (limit, _) = self.svcs.get_mut(si)?.src_limit.as_mut()?;
        (!limit.allow(self.now, src)).then_some(DropReason::SourceRate)
    }

    /// One-packet scheduling (`one_packet`, ipvsadm `--ops`): a datagram went out (or waits
    /// for its next hop, rewritten) on connection `idx`, which now goes, as IPVS frees an
    /// `IP_VS_CONN_F_ONE_PACKET` connection once it is sent: the client's next datagram is
    /// scheduled on its own. Never synced to cluster peers. The first fragment of a datagram
    /// (`more` fragments follow) keeps it for the fragment hold time ([`frag::FRAG_HOLD_NS`]),
    /// so the later fragments follow it (IPVS sees datagrams reassembled); it then expires.
    #[inline(never)]
    fn one_packet_done(&mut self, idx: u32, more: bool) {
        if more {
            let now = self.now;
            self.flows.get_mut(idx).set_expires(now, now + frag::FRAG_HOLD_NS);
        } else {
            self.remove_conn(idx, true);
        }
    }

    /// DR active FTP: the real server opened the data connection straight
    /// to the client; the client's first packet we see (its SYN-ACK to the
    /// VIP) must reach that real server.
    pub(super) fn dr_active_data(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        // Only the client's SYN-ACK opens it (a stray ACK does not consume the pinhole).
        if p.tcp_flags & TCP_SYN == 0 {
            return self.cluster_recreate(pkt, p);
        }
        let Some(v) = self.take_expected(&ExpKey::DrActive(p.src, p.sport, p.dst)) else {
            return self.cluster_recreate(pkt, p);
        };
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            p.src,
            p.sport,
            p.dst,
            p.dport,
            v.rs,
            p.dport,
            Local::Any,
        ) {
            Ok(i) => i,
            Err(r) => return self.refuse(v.svc as usize, r),
        };
        self.link_parent(idx, v.parent, v.parent_gen);
        self.forward(idx, Dir::In, pkt, p)
    }

    /// Cluster: the service a client packet to a VIP belongs to, for placement without local
    /// state. The service owning the port; else, for a DR/tunnel FTP service of the VIP, an FTP
    /// data connection (a port >= 1024, or the active-mode port 20, as the service's data
    /// ports allow): it goes to the real server the cluster-wide Maglev choice gives the client,
    /// i.e. its control connection's, on every node, whether or not this node saw the PASV/PORT
    /// (as an IPVS persistent port-0 service places FTP data in DR). Not for NAT or full NAT:
    /// a full-NAT data connection must leave from its control connection's local address,
    /// which only the synced expectation names; without it the SYN is dropped (`no_service`)
    /// and its retransmission finds the expectation. `None` outside a cluster.
    pub(super) fn cluster_service(&self, p: &Parsed) -> Option<usize> {
        self.snap.config.cluster.as_ref()?;
        if let Some(si) = self.snap.service(p.dst, p.proto, p.dport) {
            return Some(si);
        }
        if p.proto != PROTO_TCP {
            return None;
        }
        self.snap.services.iter().position(|s| {
            s.vip == p.dst
                && s.proto == PROTO_TCP
                && matches!(s.forward, Forward::Dr | Forward::Tunnel)
                && s.ftp.as_ref().is_some_and(|f| p.dport == 20 || p.dport >= 1024 || f.allow_low_data_ports)
        })
    }

    /// Cluster, DR/tunnel: a packet of a connection this node does not know (not a bare SYN:
    /// ECMP rehashed an established connection here after a node change) recreates it by the
    /// choice every node makes (Maglev over the client address, as Katran does); the TCP state
    /// follows from the packet (an ACK gives ESTABLISHED). NAT connections are not recreated:
    /// their replies carry rewritten addresses only the owning node (or a synced peer) knows.
    #[inline]
    pub(super) fn cluster_recreate(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if self.snap.config.cluster.is_none() {
            return Next::Drop(DropReason::NoFlow);
        }
        self.cluster_recreate_slow(pkt, p)
    }

    #[inline(never)]
    pub(super) fn cluster_recreate_slow(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        let Some(si) = self.cluster_service(p) else { return Next::Drop(DropReason::NoFlow) };
        if !self.snap.services[si].admits(p.src) {
            return self.refuse(si, DropReason::SourceDenied);
        }
        let Some(di) = self.schedule(si, p) else { return self.refuse(si, DropReason::NoRealServer) };
        let d = &self.snap.services[si].dests[di];
        if matches!(d.forward, Forward::Nat | Forward::Fnat) {
            return Next::Drop(DropReason::NoFlow);
        }
        let owned = self.snap.service(p.dst, p.proto, p.dport) == Some(si);
        let (rs, rport) = (d.addr, if owned { d.port.unwrap_or(p.dport) } else { p.dport });
        let idx = match self.create_conn(si, di, p.src, p.sport, p.dst, p.dport, rs, rport, Local::Any) {
            Ok(i) => i,
            Err(r) => return self.refuse(si, r),
        };
        bump(&self.counters.flows_recreated, 1);
        self.forward(idx, Dir::In, pkt, p)
    }

    /// A packet from a real server with no connection: an active FTP data
    /// connection the gateway expects, or a stray.
    pub(super) fn new_outbound(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if p.proto != PROTO_TCP || p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0 {
            return Next::Drop(DropReason::NoFlow);
        }
        let Some(v) = self.take_expected(&ExpKey::Active(p.src, p.dst, p.dport)) else {
            return Next::Drop(DropReason::NoFlow);
        };
        if v.cport != 0 {
            return self.fnat_active_data(pkt, p, v);
        }
        // The client sees the data connection come from VIP:20, whatever port the real server
        // used (20 with vsftpd; pyftpdlib when not root and proftpd pick another).
        let Some(vport) = self.active_data_vport(v.vip, p.dst, p.dport, p) else {
            return Next::Drop(DropReason::TupleInUse);
        };
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            p.dst,
            p.dport,
            v.vip,
            vport,
            p.src,
            p.sport,
            Local::Any,
        ) {
            Ok(i) => i,
            Err(r) => return self.refuse(v.svc as usize, r),
        };
        self.link_parent(idx, v.parent, v.parent_gen);
        self.forward(idx, Dir::Out, pkt, p)
    }

    /// Full NAT active FTP: the real server connects from RS:port to the local port reserved
    /// for the client's PORT/EPRT; the connection becomes VIP:20 -> client:port (the client's
    /// answers to VIP:20 go back to RS:port from that local port).
    pub(super) fn fnat_active_data(&mut self, pkt: &mut Q::Buf, p: &Parsed, v: ExpVal) -> Next {
        let Some(k) = self.reserved.iter().position(|&(a, port, _)| a == p.dst && port == p.dport) else {
            return Next::Drop(DropReason::NoFlow);
        };
        let local = Local::Fixed(p.dst, p.dport);
        let Some(vport) = self.active_data_vport(v.vip, v.client, v.cport, p) else {
            return Next::Drop(DropReason::TupleInUse);
        };
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            v.client,
            v.cport,
            v.vip,
            vport,
            p.src,
            p.sport,
            local,
        ) {
            Ok(i) => i,
            Err(r) => return self.refuse(v.svc as usize, r),
        };
        // The connection owns the port now (released when it ends).
        self.reserved.swap_remove(k);
        self.link_parent(idx, v.parent, v.parent_gen);
        self.forward(idx, Dir::Out, pkt, p)
    }

    /// The VIP port an active FTP data connection from the real server (`p`, a SYN) to
    /// `client:cport` comes from: 20, as IPVS does. Clients pick their PORT/EPRT ports from the
    /// ephemeral range and reuse them, while the balancer still holds the previous data
    /// connection to that port in TIME_WAIT (the server closed it; the client's side is long
    /// gone): like nf_conntrack and IPVS's conn_reuse_mode, a connection that is closing (or
    /// expired) gives its tuple up to the new SYN. One still open keeps it, and the new
    /// connection comes from the real server's own port instead, as nf_nat moves a clashing
    /// source port (FTP clients accept a data connection from any port). `None`: both taken.
    pub(super) fn active_data_vport(&mut self, vip: Addr, client: Addr, cport: u16, p: &Parsed) -> Option<u16> {
        // The reply key (real server -> client, or -> the local address in full NAT) is the
        // SYN's own 5-tuple: a closing connection on it goes the same way.
        let out = flow_key(p);
        if !self.free_closing(&out) {
            return None;
        }
        [20, p.sport].into_iter().find(|&vport| {
            let key = FlowKey { src: client, dst: vip, sport: cport, dport: vport, proto: PROTO_TCP };
            self.free_closing(&key)
        })
    }

    /// Is `key` free for a new connection? A connection holding it that is closing (a FIN
    /// seen: FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE) or expired is removed first
    /// (counted in `flows_reused`, or `flows_expired`); an open one keeps it (`false`).
    pub(super) fn free_closing(&mut self, key: &FlowKey) -> bool {
        use crate::flow::tcpstate::TcpState as S;
        let Some((idx, _)) = self.flows.lookup(key) else { return true };
        let c = self.flows.get(idx);
        if c.expired(self.now) {
            self.remove_conn(idx, true);
            return true;
        }
        if !matches!(c.state, S::FinWait | S::TimeWait | S::Close | S::CloseWait | S::LastAck) {
            return false;
        }
        bump(&self.counters.flows_reused, 1);
        self.remove_conn(idx, false);
        true
    }

    /// The oldest live expectation with `key`, consumed (pinholes are single use). Dead or
    /// expired ones met on the way are dropped and counted.
    pub(super) fn take_expected(&mut self, key: &ExpKey) -> Option<ExpVal> {
        while let Some(v) = self.expect.take(key) {
            let parent_ok = self.flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen);
            let c = self.svc_counters.get(v.svc as usize);
            if parent_ok && v.expires > self.now {
                if let Some(c) = c {
                    bump(&c.ftp.expectations_used, 1);
                }
                return Some(v);
            }
            if let Some(c) = c {
                bump(&c.ftp.expectations_expired, 1);
            }
        }
        None
    }

    pub(super) fn link_parent(&mut self, idx: u32, parent: u32, parent_gen: u32) {
        if parent == NONE {
            return;
        }
        if self.flows.try_get(parent).is_some_and(|c| c.gen == parent_gen) {
            self.flows.cold_mut(parent).children += 1;
            let k = self.flows.cold_mut(idx);
            k.parent = parent;
            k.parent_gen = parent_gen;
            self.flows.get_mut(idx).flags |= F_DATA;
        }
    }

    /// Scheduler (with persistence) for service `si`. Inline: a new connection's caller has
    /// its frame set up already (a call of its own saved and restored six registers).
    #[inline(always)]
    pub(super) fn schedule(&mut self, si: usize, p: &Parsed) -> Option<usize> {
        let snap = &self.snap;
        if snap.services[si].dests.is_empty() {
            return None;
        }
        let st = &mut self.svcs[si];
        if st.persist.is_some() {
            return self.schedule_persistent(si, p);
        }
        let key = sched_key(st.uses_key, p);
        st.sched.pick(&key, &st.dests, &snap.conn_counts[si])
    }

    /// [`Worker::schedule`] of a service with persistence (a non-empty one): the client's
    /// template, else the scheduler's pick, which becomes the template (and is synced). Out of
    /// line, so the common schedule saves no registers for it.
    #[inline(never)]
    fn schedule_persistent(&mut self, si: usize, p: &Parsed) -> Option<usize> {
        let snap = &self.snap;
        let svc = &snap.services[si];
        let st = &mut self.svcs[si];
        let dests = &st.dests;
        if let Some(pt) = st.persist.as_mut() {
            let client_ip = addr_to_ip(p.src);
            if let Some(d) = pt.lookup(client_ip, self.now, dests) {
                pt.touch(client_ip, self.now);
                return Some(d);
            }
        }
        let key = sched_key(st.uses_key, p);
        let d = st.sched.pick(&key, dests, &snap.conn_counts[si])?;
        if let Some(pt) = st.persist.as_mut() {
            let client_ip = addr_to_ip(p.src);
            pt.insert(client_ip, d, self.now, dests);
            if self.sync_on {
                let dd = &svc.dests[d];
                let vport = svc.ports.first().map_or(0, |r| r.lo);
                let timeout_s = svc.persistence.map_or(0, |(t, _)| (t / 1_000_000_000) as u32);
                let e = SyncEntry::Template(crate::cluster::sync::TemplateSync {
                    proto: p.proto,
                    client: p.src,
                    vip: p.dst,
                    vport,
                    rs: dd.addr,
                    rport: dd.port.unwrap_or(0),
                    timeout_s,
                });
                self.push_sync(e);
            }
        }
        Some(d)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_conn(
        &mut self,
        si: usize,
        di: usize,
        client: Addr,
        cport: u16,
        vip: Addr,
        vport: u16,
        rs: Addr,
        rport: u16,
        local: Local,
    ) -> Result<u32, DropReason> {
        let snap = &self.snap;
        let svc = &snap.services[si];
        let d = &svc.dests[di];
        let fwd = d.forward;
        let proto = svc.proto;
        let mut c = flow::new_conn(proto, fwd, client, cport, vip, vport, rs, rport);
        c.svc = si as u16;
        c.dest = di as u16;
        c.snap_gen = self.snap_gen;
        // The real server's memo: read here and updated once the connection is in, through one
        // borrow (of its own field: the table and the local ports are borrowed beside it).
        let memo = self.svcs.get_mut(si).and_then(|st| st.ids.get_mut(di));
        let m = memo.as_deref().unwrap_or(&DestMemo::EMPTY);
        c.hint = m.ids;
        // Routes towards the real server (the snapshot's, for a configured one) and back to the
        // client.
        let Some((if_in, nh_in)) = (if rs == d.addr { d.route } else { snap.route(rs) }) else {
            return Err(DropReason::NoRoute);
        };
        c.if_in = if_in as u8;
        c.nh_in = nh_in;
        if fwd.two_way() {
            let Some((if_out, nh_out)) = snap.route(client) else { return Err(DropReason::NoRoute) };
            c.if_out = if_out as u8;
            c.nh_out = nh_out;
        }
        // Checksum deltas: address words, port word, and (NAT) TTL.
        let v4 = addr_is_v4(client);
        let mut laddr = 0;
        let sums_key = (vip, rs, vport, rport, v4);
        // Compared once: a hit also leaves the memo as it is below.
        let memo_hit = fwd != Forward::Fnat && m.valid && m.key == sums_key;
        if memo_hit {
            // The same rewrite as the last connection to this real server: its deltas, and
            // its VIP, real server and next hop in, which the memo vouches for.
            (c.l3_in, c.l4_in) = (m.l3_in as u32, m.l4_in as u32);
            c.hint_sure = m.epoch == self.flows.ids_epoch();
        } else {
            // Summed unfolded, folded once per field (the same ones-complement sums).
            let mut a_in = csum::delta_addr_unfolded(vip, rs, v4);
            let mut p_in = csum::delta16(vport, rport);
            if fwd == Forward::Fnat {
                // The source side too: client:cport <-> local address:port.
                let picked = match local {
                    Local::Fixed(a, port) => Some((a, port)),
                    // A cluster peer's local address (a data connection of a control connection
                    // the peer opened): from this node's slot of its ports.
                    Local::Prefer(a) if !svc.local.contains(&a) => {
                        let slot = self.snap.config.cluster.as_ref().map_or(0, |c| c.node_id);
                        self.lports.take_foreign(a, proto, slot).map(|port| (a, port))
                    }
                    Local::Prefer(a) => self.lports.take_on(a, proto).map(|port| (a, port)),
                    Local::Any => None,
                };
                let Some((la, lport)) = picked.or_else(|| self.lports.alloc(si, &svc.local, proto)) else {
                    return Err(DropReason::FnatPortsExhausted);
                };
                laddr = la;
                c.laddr = la;
                c.lport = lport;
                a_in += csum::delta_addr_unfolded(client, la, v4);
                p_in += csum::delta16(cport, lport);
            }
            if fwd == Forward::Fnat && v4 != addr_is_v4(rs) {
                // IPv6 <-> IPv4: every packet is translated (`nat64`), its checksums adjusted
                // there; the precomputed deltas do not apply.
                c.flags |= F_XLAT;
                (a_in, p_in) = (0, 0);
            }
            let ttl = if v4 { TTL_DELTA } else { 0 };
            c.l3_in = if v4 { csum::fold(a_in + ttl) as u32 } else { 0 };
            // The reply direction's L4 delta is this one's complement (`Conn::l4_out`).
            c.l4_in = csum::fold(a_in + p_in) as u32;
        }
        c.expires = self.now + snap.timeouts[c.state as usize];
        // Counted below, once it is in.
        c.flags |= F_COUNTED;
        let lport = c.lport;
        let Some((idx, e)) = self.flows.insert_ref(&c, self.now) else {
            if fwd == Forward::Fnat && !matches!(local, Local::Fixed(..)) {
                self.lports.release(laddr, proto, lport);
            }
            return Err(DropReason::TableFull);
        };
        let ids = [e.vipi, e.rsi, e.hop_in, e.hop_out];
        if let Some(m) = memo {
            // Written only when it changes (the common connection leaves it as it was).
            let epoch = self.flows.ids_epoch();
            if m.ids != ids || m.epoch != epoch {
                (m.ids, m.epoch) = (ids, epoch);
            }
            if fwd != Forward::Fnat && !memo_hit {
                m.key = sums_key;
                (m.l3_in, m.l4_in) = (c.l3_in as u16, c.l4_in as u16);
                m.valid = true;
            }
        }
        let pp = match d.proxy_v2 {
            Some(v2) if proto == PROTO_TCP && fwd.two_way() => {
                Some(crate::pipeline::proxyproto::for_conn(v2, client, cport, vip, vport))
            }
            _ => None,
        };
        if let Some(pp) = pp {
            self.flows.cold_mut(idx).pp = Some(Box::new(pp));
            self.flows.get_mut(idx).flags |= F_PPROTO;
        }
        let counts = &snap.conn_counts[si];
        counts.inc_inactive(self.id, di);
        bump(&self.counters.flows_created, 1);
        bump(&self.counters.flows_active, 1);
        let sc = &self.svc_counters[si];
        bump(&sc.conns, 1);
        bump(&sc.dests[di].conns, 1);
        Ok(idx)
    }
}

/// The scheduler's view of packet `p`'s flow, for a scheduler that `uses_key` (round robin,
/// weights and counts do not look at it: no key built for them).
#[inline(always)]
fn sched_key(uses_key: bool, p: &Parsed) -> sched::FlowKey {
    if uses_key {
        sched::FlowKey {
            client: addr_to_ip(p.src),
            client_port: p.sport,
            vip: addr_to_ip(p.dst),
            vport: p.dport,
            proto: p.proto,
        }
    } else {
        sched::FlowKey::UNUSED
    }
}
