//! The SYN proxy's glue ([`crate::pipeline::synproxy`] holds the cookies): answering SYNs,
//! validating ACKs, opening the connection to the real server, holding the client's data until it
//! answers, and translating sequence numbers afterwards.

use super::*;
use crate::pipeline::synproxy::Bare;
use crate::wire::view::Tcp;

impl<Q: BufAlloc> Worker<Q> {
    /// The real server answered a proxied connection's SYN: its held client packets go now.
    pub(super) fn release_proxied(&mut self, idx: u32) {
        let gen = self.flows.get(idx).gen;
        let mut k = 0;
        while k < self.proxy_held.len() {
            if self.proxy_held[k].key == (idx, gen) {
                let mut h = self.proxy_held.remove(k);
                let next = match parse::parse(h.buf.data()) {
                    Ok(p) if self.flows.try_get(idx).is_some_and(|c| c.gen == gen) => {
                        self.forward(idx, Dir::In, &mut h.buf, &p)
                    }
                    _ => Next::Drop(DropReason::ProxyWait),
                };
                self.finish(h.buf, next);
            } else {
                k += 1;
            }
        }
    }

    /// SYN proxy for a packet to a VIP with no connection: answers a SYN with a cookie, or
    /// opens the connection for an ACK carrying a valid one. `None`: not for the proxy (the
    /// ordinary path takes it).
    ///
    /// `svc`: the service of (VIP, protocol, port) if the caller looked it up already.
    /// `old`: the closing connection on the packet's tuple (a handshake reusing it, see
    /// [`Worker::proxy_reusable`]): a segment without a valid cookie is left to it (`None`,
    /// nothing counted), a valid cookie replaces it with the new connection.
    pub(super) fn syn_proxy(
        &mut self,
        iface: usize,
        pkt: &mut Q::Buf,
        p: &Parsed,
        svc: Option<Option<usize>>,
        old: Option<u32>,
    ) -> Option<Next> {
        use ferrovs_cfg::SynProxy;
        if p.proto != PROTO_TCP {
            return None;
        }
        // Not a SYN, and no cookie went out lately: neither a handshake's last segment nor a
        // verifying reset can carry one (the checks below would all let it go). Decided
        // before the service lookup and the real-server scans, so a flood of stray segments
        // stays cheap.
        let recent = self.cookie_recent();
        if p.tcp_flags & TCP_SYN == 0 && !recent {
            return None;
        }
        let si = svc.unwrap_or_else(|| self.snap.service(p.dst, p.proto, p.dport))?;
        let svc = &self.snap.services[si];
        let mode = svc.syn_proxy;
        if mode == SynProxy::Off {
            return None;
        }
        // PROXY protocol shifts the client's sequence space itself: not combined with the
        // SYN proxy's splice (documented with the key).
        // Nor with a translated service (its handshake with the real server would have to be
        // built in the other family).
        if svc.dests.is_empty()
            || svc.dests.iter().any(|d| d.proxy_v2.is_some() || addr_is_v4(d.addr) != addr_is_v4(p.dst))
        {
            return None;
        }
        let engaged = self.proxy_engaged(mode);
        let hs = Handshake { client: p.src, vip: p.dst, cport: p.sport, vport: p.dport, isn: 0 };
        let (seq, ack) = {
            let t = &pkt.data()[p.l4..];
            (u32::from_be_bytes([t[4], t[5], t[6], t[7]]), u32::from_be_bytes([t[8], t[9], t[10], t[11]]))
        };
        // In DR and tunnel mode the real server answers the client directly, with its own
        // sequence numbers, which the balancer never sees: no handshake can be spliced.
        if svc.dests.iter().any(|d| !d.forward.two_way()) {
            return self.syn_verify(iface, pkt, p, &hs, seq, mode != SynProxy::Off && engaged);
        }
        if p.tcp_flags & parse::TCP_RST != 0 {
            return None;
        }
        if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            // A data connection an FTP session announced on a service port is not proxied.
            if !engaged || self.expect.get(&ExpKey::Passive(p.src, p.dst, p.dport)).is_some() {
                return None;
            }
            let mss = synproxy::mss_option(&pkt.data()[p.l4..p.end]).unwrap_or(536);
            let cookie = self.cookies.make(self.now, &Handshake { isn: seq, ..hs }, mss);
            let ours = self.caps[iface].mtu.saturating_sub(if p.v6 { 60 } else { 40 }).max(536);
            let seg = Bare {
                flags: TCP_SYN | TCP_ACK,
                seq: cookie,
                ack: seq.wrapping_add(1),
                mss: Some(ours),
                win: synproxy::CLIENT_WINDOW,
            };
            return Some(self.send_cookie(iface, pkt, p, seg));
        }
        // Only the handshake's last segment can carry a cookie: a plain ACK (with or without
        // data), no SYN, FIN or RST.
        // (An ACK for no connection is a cookie only if cookies went out lately, checked
        // above; else it is an ordinary stray, counted as no_flow by the ordinary path.)
        if p.tcp_flags & (TCP_SYN | TCP_ACK | parse::TCP_FIN) != TCP_ACK {
            return None;
        }
        let isn = seq.wrapping_sub(1);
        let cookie = ack.wrapping_sub(1);
        // It becomes our SYN to the real server, its headers rewritten ([`write_bare`]).
        if let Err(bad) = csum::verify(pkt.data(), p) {
            return Some(Next::Drop(bad.into()));
        }
        let Some(mss) = self.cookies.check(self.now, &Handshake { isn, ..hs }, cookie) else {
            if old.is_some() {
                return None; // a segment of the closing connection
            }
            bump(&self.counters.cookies_failed, 1);
            return Some(Next::Drop(DropReason::BadCookie));
        };
        bump(&self.counters.cookies_validated, 1);
        if let Some(idx) = old {
            // The handshake is proven: the new connection takes the tuple (IPVS
            // conn_reuse_mode, as for a SYN without the proxy).
            self.replace_closing(idx);
        }
        // The handshake is proven: the ACK becomes our SYN to the real server (its data, if any,
        // is dropped: the client retransmits it once the real server acknowledges).
        let seg = Bare { flags: TCP_SYN, seq: isn, ack: 0, mss: Some(mss), win: 29200 };
        if let Err(drop) = write_bare(pkt, p, false, seg) {
            return Some(drop);
        }
        let Ok(p2) = parse::parse(pkt.data()) else { return Some(Next::Drop(DropReason::Malformed)) };
        let next = self.new_inbound(pkt, &p2);
        if !matches!(next, Next::Drop(_)) {
            if let Some((idx, _)) = self.flows.lookup(&flow_key(&p2)) {
                self.flows.get_mut(idx).flags |= F_SYNPROXY;
                self.flows.cold_mut(idx).proxy = Some(Box::new(synproxy::Proxied {
                    isn,
                    cookie,
                    delta: 0,
                    established: false,
                    reset: false,
                    mss,
                    syn_at: self.now,
                }));
            }
        }
        Some(next)
    }

    /// The SYN proxy of DR and tunnel services. The real server answers the client itself, so
    /// the balancer verifies the client's address instead: during a flood a SYN from an
    /// unverified address is answered with a SYN-ACK whose acknowledgement number is a cookie.
    /// A real client's stack answers that unacceptable acknowledgement with a reset carrying
    /// it as sequence number (RFC 793, SYN-SENT), which verifies the address for
    /// [`VERIFIED_NS`]; the client's SYN retransmission (about a second later) then goes to
    /// the real server as usual. Spoofed sources never answer and cost no state. The price: a
    /// new client's first connection during a flood waits one SYN retransmission.
    pub(super) fn syn_verify(
        &mut self,
        iface: usize,
        pkt: &mut Q::Buf,
        p: &Parsed,
        hs: &Handshake,
        seq: u32,
        engaged: bool,
    ) -> Option<Next> {
        if p.tcp_flags & (TCP_SYN | TCP_ACK | parse::TCP_RST) == TCP_SYN {
            if !engaged || self.is_verified(p.src) {
                return None;
            }
            let cookie = self.cookies.make(self.now, hs, 0);
            if cookie == seq.wrapping_add(1) {
                return None; // an acceptable ack by chance (2^-32): let it through
            }
            let seg = Bare { flags: TCP_SYN | TCP_ACK, seq: cookie, ack: cookie, mss: None, win: 0 };
            return Some(self.send_cookie(iface, pkt, p, seg));
        }
        let recent = self.cookie_recent();
        if p.tcp_flags & parse::TCP_RST != 0 && recent {
            // Its source address would be verified: not a corrupted one (nor a corrupted
            // sequence number taken for a cookie).
            if let Err(bad) = csum::verify(pkt.data(), p) {
                return Some(Next::Drop(bad.into()));
            }
        }
        if p.tcp_flags & parse::TCP_RST != 0 && recent && self.cookies.check(self.now, hs, seq).is_some() {
            self.verify(p.src);
            bump(&self.counters.cookies_validated, 1);
            return Some(Next::Drop(DropReason::SynVerified));
        }
        None
    }

    /// `pkt` turned into the SYN-ACK `seg` carrying a cookie, back out of `iface`, and the
    /// cookie counted; the drop if it cannot be, or if the SYN's IPv4 header checksum fails
    /// (Linux drops it in `ip_rcv`) or its TCP checksum does (Linux's SYNPROXY target checks
    /// it first): [`write_bare`] computes both afresh, which would launder the corruption
    /// (the SYN-ACK sent to a corrupted port, acknowledging a corrupted sequence number).
    #[inline(always)]
    fn send_cookie(&mut self, iface: usize, pkt: &mut Q::Buf, p: &Parsed, seg: Bare) -> Next {
        if let Err(bad) = csum::verify(pkt.data(), p) {
            return Next::Drop(bad.into());
        }
        if let Err(drop) = write_bare(pkt, p, true, seg) {
            return drop;
        }
        self.last_cookie = self.now;
        self.syn.note_sent(self.now);
        bump(&self.counters.cookies_sent, 1);
        Next::Tx(iface)
    }

    /// Did this worker, or another (which may have answered a SYN of a client this worker
    /// owns, see [`Worker::syn_cookie_here`]), send a SYN cookie in the last ~2 minutes
    /// (2^37 ns)? Only then can a segment without SYN (a handshake's last ACK, a verifying
    /// reset) carry one.
    #[inline(always)]
    pub(super) fn cookie_recent(&self) -> bool {
        let last = self.last_cookie.max(self.syn.last_sent());
        last != 0 && self.now.saturating_sub(last) <= 2 << 36
    }

    /// Does this worker's SYN proxy answer SYNs for a service in `mode`: always (`on`), above
    /// the half-open threshold (`auto`), never (`off`)?
    #[inline(always)]
    fn proxy_engaged(&self, mode: ferrovs_cfg::SynProxy) -> bool {
        match mode {
            ferrovs_cfg::SynProxy::On => true,
            ferrovs_cfg::SynProxy::Auto => self.half_open >= self.snap.config.engine.syn_proxy_threshold,
            ferrovs_cfg::SynProxy::Off => false,
        }
    }

    /// A SYN to a VIP that reached a worker other than its client's owner: answered here with
    /// a cookie when this worker's SYN proxy is engaged for the service and splices the
    /// handshake (NAT, full NAT). Stateless, so any worker may: the cookie key is the same on
    /// all, and the client's ACK goes to the owner, which checks the cookie and opens the
    /// connection. During a flood the SYNs are then not handed between workers, whose handoff
    /// rings would fill and drop the legitimate packets waiting in them with the flood's (a
    /// lab run lost one client's connection that way). `None`: handed to the owner as before:
    /// not engaged here, a martian source (the owner counts it), or a DR or tunnel service
    /// (verified client addresses are the owner's).
    ///
    /// What the owner's table holds is not known here. A SYN reusing a closing connection's
    /// tuple the owner would answer with a cookie too, and the ACK replaces the entry there; an
    /// FTP data connection the owner expects (which it would not proxy) is proxied, and the
    /// cookie's ACK still takes the expectation ([`Worker::new_inbound`]). Only a SYN
    /// retransmitted for a handshake the owner forwarded unproxied before its proxy engaged
    /// gets a cookie here instead of reaching the real server (the NIC's flow hash sends a
    /// tuple's packets to one worker, so only when this worker engaged in between).
    #[inline(never)]
    pub(super) fn syn_cookie_here(&mut self, iface: usize, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        if self.snap.martian_source(p.src) {
            return None;
        }
        let si = self.snap.service(p.dst, p.proto, p.dport)?;
        let svc = &self.snap.services[si];
        if !self.proxy_engaged(svc.syn_proxy) || svc.dests.iter().any(|d| !d.forward.two_way()) {
            return None;
        }
        self.syn_proxy(iface, pkt, p, Some(Some(si)), None)
    }

    pub(super) fn verified_slot(a: Addr) -> usize {
        let x = (a as u64) ^ ((a >> 64) as u64);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - VERIFIED_BITS)) as usize
    }

    pub(super) fn is_verified(&self, a: Addr) -> bool {
        self.verified.get(Self::verified_slot(a)).is_some_and(|&(x, until)| x == a && until > self.now)
    }

    pub(super) fn verify(&mut self, a: Addr) {
        if self.verified.is_empty() {
            self.verified = vec![(0, 0); 1 << VERIFIED_BITS];
        }
        let until = self.now + VERIFIED_NS;
        self.verified[Self::verified_slot(a)] = (a, until);
    }

    /// What becomes of a segment `p` of SYN-proxied connection `idx` while the real server's
    /// handshake is pending, before [`Worker::forward`] does any account (`None`: it goes on,
    /// to the accounts and [`Worker::proxy_segment`]).
    ///
    /// A client segment waits for the real server's handshake, untouched
    /// ([`Next::ProxyHold`]): not our SYN, not a reset, and our SYN not due again; its
    /// accounts are done once, when it is released (it goes through this path again). Once
    /// our SYN is due again, the segment becomes it ([`Worker::proxy_syn_again`]). A
    /// client reset goes on only inside the window our SYN-ACK offered (past the client's
    /// ISN; RFC 793: an unacceptable reset is dropped): it is tracked, and
    /// [`Worker::proxy_segment`] turns it into our reset to the server. Once the client has
    /// reset the connection, nothing more of it goes anywhere.
    ///
    /// A real server's segment must answer our SYN as a TCP end in SYN-SENT accepts it
    /// (RFC 793; Linux `tcp_rcv_synsent_state_process`): it acknowledges our SYN (ack = the
    /// client's ISN + 1) and carries SYN or RST. Anything else (a forged or stale SYN-ACK, a
    /// reset without that acknowledgement, a bare ACK) is dropped, counted, with no state or
    /// account changed: the connection keeps waiting for the right SYN-ACK, whose sequence
    /// number alone sets the offset. After the client's reset, a SYN-ACK (our reset lost, or
    /// crossing it) is answered with a reset as by a closed port (RFC 793: seq = its ack),
    /// not tracked.
    #[inline]
    pub(super) fn proxy_pending(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        let px = *self.flows.cold(idx).proxy.as_deref()?;
        if px.established {
            return None;
        }
        // Until the handshakes are spliced the proxy builds segments from the ones it gets (our
        // SYN again, our ACK or reset to the server, our reset after the client's): not from
        // one whose IPv4 header checksum fails (Linux drops it in `ip_rcv`), nor one whose TCP
        // checksum does (the server's ISN, which sets the connection's offset, corrupted).
        if let Err(bad) = csum::verify(pkt.data(), p) {
            return Some(Next::Drop(bad.into()));
        }
        let rst = p.tcp_flags & parse::TCP_RST != 0;
        let Ok((seq, ack)) = Tcp::at(pkt.data(), p.l4).map(|t| (t.seq(), t.ack())) else {
            return Some(Next::Drop(DropReason::Malformed));
        };
        match dir {
            Dir::In if px.reset => Some(Next::Drop(DropReason::ProxyUnacceptable)),
            Dir::In if rst => (seq.wrapping_sub(px.isn.wrapping_add(1)) >= u32::from(synproxy::CLIENT_WINDOW))
                .then_some(Next::Drop(DropReason::ProxyUnacceptable)),
            Dir::In if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => None,
            Dir::In if self.now.saturating_sub(px.syn_at) < synproxy::SYN_RETRY_NS => Some(Next::ProxyHold(idx)),
            // The server has not answered our SYN (lost, or the server slow): only we can
            // send it again. This client segment (a retransmission, most likely: an earlier
            // copy is held, and nobody acknowledged its data) becomes it.
            Dir::In => Some(self.proxy_syn_again(idx, pkt, p, px)),
            Dir::Out if px.reset => {
                if rst || p.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK {
                    return Some(Next::Drop(DropReason::ProxyUnacceptable));
                }
                let seg = Bare { flags: parse::TCP_RST, seq: ack, ack: 0, mss: None, win: 0 };
                if let Err(drop) = write_bare(pkt, p, true, seg) {
                    return Some(drop);
                }
                Some(self.l2_write(idx, true, pkt.data_mut()))
            }
            Dir::Out => {
                let acceptable = p.tcp_flags & TCP_ACK != 0
                    && ack == px.isn.wrapping_add(1)
                    && p.tcp_flags & (TCP_SYN | parse::TCP_RST) != 0;
                (!acceptable).then_some(Next::Drop(DropReason::ProxyUnacceptable))
            }
        }
    }

    /// A segment of a SYN-proxied connection: the real server's handshake, then the sequence
    /// offset on the client's acknowledgements (the server's sequence numbers are shifted in
    /// [`Worker::forward_rewrite`], after the FTP gateway). `None`: go on forwarding.
    pub(super) fn proxy_segment(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        let px = *self.flows.cold(idx).proxy.as_deref()?;
        let l4 = p.l4;
        match (dir, px.established) {
            (Dir::In, false) => {
                // Our own SYN (made from the client's ACK) goes; the client's data waits.
                if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    None
                } else if p.tcp_flags & parse::TCP_RST != 0 {
                    // The client resets the connection (tracked, in the window:
                    // `proxy_pending`).
                    Some(self.proxy_client_reset(idx, pkt, p, px))
                } else {
                    // (`proxy_pending` held it, or made it our SYN again.)
                    Some(Next::ProxyHold(idx))
                }
            }
            (Dir::Out, false) => {
                let Ok(rs_seq) = Tcp::at(pkt.data(), l4).map(|t| t.seq()) else {
                    return Some(Next::Drop(DropReason::Malformed));
                };
                // Acknowledging our SYN ([`Worker::proxy_pending`]): a SYN-ACK, or a reset
                // (RFC 793 SYN-SENT: the RST bit is checked before the SYN bit).
                if p.tcp_flags & (TCP_SYN | TCP_ACK | parse::TCP_RST) == TCP_SYN | TCP_ACK {
                    // Answer the real server ourselves and start translating.
                    let delta = px.cookie.wrapping_sub(rs_seq);
                    // The FTP gateway reads the server's own sequence space (the offset is
                    // applied after it): its reply stream starts at this ISN, as from any
                    // SYN-ACK it sees, so a first reply segment after a hole is not taken
                    // for the start of a line.
                    if let Some(s) = self.flows.cold_mut(idx).alg.as_deref_mut() {
                        s.set_isn(alg::Dir::Reply, rs_seq);
                    }
                    let seg = Bare {
                        flags: TCP_ACK,
                        seq: px.isn.wrapping_add(1),
                        ack: rs_seq.wrapping_add(1),
                        mss: None,
                        win: 29200,
                    };
                    let Ok(end) = synproxy::answer(pkt.data_mut(), p, true, seg) else {
                        return Some(Next::Drop(DropReason::Malformed));
                    };
                    if !pkt.set_len(end) {
                        return Some(Next::Drop(DropReason::NoBuffer));
                    }
                    if let Some(x) = self.flows.cold_mut(idx).proxy.as_deref_mut() {
                        x.delta = delta;
                        x.established = true;
                    }
                    // Both handshakes are complete: ESTABLISHED now (on its timeout, out of
                    // the half-open count), not at the client's next segment (DPVS's SYN
                    // proxy does the same); the peers learn it with the offset.
                    let before = self.flows.get(idx).state;
                    self.set_tcp_state(idx, crate::flow::tcpstate::TcpState::Established);
                    if self.sync_on && before != self.flows.get(idx).state {
                        self.sync_conn(idx);
                    }
                    self.proxy_release = Some(idx);
                    return Some(self.l2_write(idx, true, pkt.data_mut()));
                }
                if p.tcp_flags & parse::TCP_RST != 0 {
                    // Refused: the client gets the reset in its own sequence space.
                    if let Some(x) = self.flows.cold_mut(idx).proxy.as_deref_mut() {
                        x.delta = px.cookie.wrapping_add(1).wrapping_sub(rs_seq);
                        x.established = true;
                    }
                    return None;
                }
                Some(Next::Drop(DropReason::ProxyWait))
            }
            (Dir::In, true) => {
                if p.tcp_flags & TCP_ACK != 0 {
                    let Ok(mut t) = Tcp::at_mut(pkt.data_mut(), l4) else {
                        return Some(Next::Drop(DropReason::Malformed));
                    };
                    let c = t.shift_ack(px.delta.wrapping_neg());
                    t.adjust_checksum(c);
                }
                None
            }
            (Dir::Out, true) => None,
        }
    }
}

impl<Q: BufAlloc> Worker<Q> {
    /// The client's reset `pkt` of proxied connection `idx` while the real server's handshake
    /// is pending: what a TCP end would do. The client's held segments are discarded
    /// (counted as `proxy_wait`), and the reset becomes ours to the real server, which may
    /// have our SYN: one it accepts in SYN-RCVD (Linux `tcp_check_req` checks an ACK before
    /// the RST bit, then the sequence number): seq = the client's ISN + 1, its next expected
    /// byte, and no ACK (the client's acknowledgement is in our cookie's space, and the
    /// server's ISN is unknown). A server that never got our SYN ignores it (no connection,
    /// no ACK). The connection goes to CLOSE and expires on the CLOSE timeout; a late
    /// SYN-ACK is reset ([`Worker::proxy_pending`]).
    fn proxy_client_reset(&mut self, idx: u32, pkt: &mut Q::Buf, p: &Parsed, px: synproxy::Proxied) -> Next {
        let gen = self.flows.get(idx).gen;
        let before = self.proxy_held.len();
        self.proxy_held.retain(|h| h.key != (idx, gen));
        for _ in self.proxy_held.len()..before {
            self.drop_pkt(DropReason::ProxyWait);
        }
        if let Some(x) = self.flows.cold_mut(idx).proxy.as_deref_mut() {
            x.reset = true;
        }
        // IPVS's table keeps SYN_RECV on a client's reset (the server may ignore it); ours is
        // one the server accepts: the connection is over at both ends, CLOSE (out of the
        // half-open count that engages the proxy), on the CLOSE timeout.
        use crate::flow::tcpstate::TcpState;
        let st = self.flows.get(idx).state;
        self.set_tcp_state(idx, TcpState::Close);
        if self.sync_on && st != TcpState::Close {
            self.sync_conn(idx);
        }
        let seg = Bare { flags: parse::TCP_RST, seq: px.isn.wrapping_add(1), ack: 0, mss: None, win: 0 };
        if let Err(drop) = write_bare(pkt, p, false, seg) {
            return drop;
        }
        let Ok(p2) = parse::parse(pkt.data()) else { return Next::Drop(DropReason::Malformed) };
        self.forward_rewrite(idx, Dir::In, pkt, &p2)
    }

    /// Client segment `pkt` of proxied connection `idx`, still waiting for the real server's
    /// SYN-ACK, rewritten into our SYN to the real server once more (as first sent: the
    /// client's ISN, the cookie's MSS), before any account: it goes the way the first one
    /// went, through [`Worker::forward`], so what went out is what the state machine sees
    /// (a SYN: the connection stays half-open, not ESTABLISHED on the client's ACK) and the
    /// FTP gateway clamps its MSS as it clamped the first.
    #[inline(never)]
    fn proxy_syn_again(&mut self, idx: u32, pkt: &mut Q::Buf, p: &Parsed, px: synproxy::Proxied) -> Next {
        let seg = Bare { flags: TCP_SYN, seq: px.isn, ack: 0, mss: Some(px.mss), win: 29200 };
        if let Err(drop) = write_bare(pkt, p, false, seg) {
            return drop;
        }
        let Ok(p2) = parse::parse(pkt.data()) else { return Next::Drop(DropReason::Malformed) };
        if let Some(x) = self.flows.cold_mut(idx).proxy.as_deref_mut() {
            x.syn_at = self.now;
        }
        bump(&self.counters.proxy_syn_retries, 1);
        self.forward(idx, Dir::In, pkt, &p2)
    }
}

/// `pkt` (parsed as `p`) rewritten in place into the bare segment `seg`, back to its sender
/// (`reply`) or on towards the real server, with room made first for its TCP header and
/// MSS option (20 or 24 bytes); the drop if the buffer cannot hold it or the frame is
/// malformed.
#[inline(always)]
fn write_bare<B: Packet>(pkt: &mut B, p: &Parsed, reply: bool, seg: Bare) -> Result<(), Next> {
    let need = p.l4 + if seg.mss.is_some() { 24 } else { 20 };
    if pkt.len() < need && !pkt.set_len(need) {
        return Err(Next::Drop(DropReason::NoBuffer));
    }
    let Ok(end) = synproxy::answer(pkt.data_mut(), p, reply, seg) else {
        return Err(Next::Drop(DropReason::Malformed));
    };
    if !pkt.set_len(end) {
        return Err(Next::Drop(DropReason::NoBuffer));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::flow::table::F_SYNCED;
    use crate::flow::tcpstate::TcpState;
    use crate::tools::replay::MemEngine;
    use crate::tools::testpkt::{tcp4, with_macs};
    use crate::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

    const S: u64 = 1_000_000_000;
    const CLIENT: [u8; 4] = [10, 0, 1, 2];
    const VIP: [u8; 4] = [10, 0, 1, 100];
    const RS1: [u8; 4] = [10, 0, 2, 2];

    /// A NAT FTP service on VIP:21 without the SYN proxy and a NAT web service on VIP:80
    /// with it, over RS1.
    const CONFIG: &str = r#"
[engine]
workers = 1
backend = "memory"
flow_table_size = 4096

[[interface]]
name = "ext"
device = "mem0"
mac = "02:00:00:00:01:01"
addresses = ["10.0.1.1/24"]

[[interface]]
name = "int"
device = "mem1"
mac = "02:00:00:00:02:01"
addresses = ["10.0.2.1/24"]

[[neighbor]]
address = "10.0.2.2"
mac = "02:00:00:00:02:02"

[[neighbor]]
address = "10.0.1.2"
mac = "02:00:00:00:01:02"

[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21]
forward = "nat"
ftp = true
syn_proxy = "off"
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web"
vip = "10.0.1.100"
ports = [80]
forward = "nat"
syn_proxy = "on"
[[service.real_server]]
address = "10.0.2.2"
"#;

    fn config() -> ferrovs_cfg::Config {
        ferrovs_cfg::Config::from_str(CONFIG, "synproxy-test.toml").expect("parses")
    }

    #[allow(clippy::too_many_arguments)]
    fn client(
        e: &mut MemEngine,
        now: u64,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<Vec<u8>> {
        send(e, now, 0, tcp4(CLIENT, sport, VIP, dport, flags, seq, ack, data))
    }

    #[allow(clippy::too_many_arguments)]
    fn server(
        e: &mut MemEngine,
        now: u64,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<Vec<u8>> {
        send(e, now, 1, tcp4(RS1, sport, CLIENT, dport, flags, seq, ack, data))
    }

    /// `frame` from the neighbour on interface `iface` (0: the client's gateway, 1: RS1) into
    /// `e`, its MACs set; the frames that come out.
    fn send(e: &mut MemEngine, now: u64, iface: usize, frame: Vec<u8>) -> Vec<Vec<u8>> {
        let n = iface as u8 + 1;
        let f = with_macs(frame, [2, 0, 0, 0, n, 2], [2, 0, 0, 0, n, 1]);
        e.inject(iface, &f, now).into_iter().map(|(_, f)| f).collect()
    }

    /// The worker's half-open count, and the live connections of its own (not a peer's
    /// backups) in SYN_RECV.
    fn half_open(e: &MemEngine) -> (u32, u32) {
        let w = e.workers[0].core();
        let scan = (0..w.flows.slots() as u32)
            .filter_map(|i| w.flows.try_get(i))
            .filter(|c| c.state == TcpState::SynRecv && c.flags & F_SYNCED == 0)
            .count() as u32;
        (w.half_open, scan)
    }

    /// The sequence number of a frame out (our cookie in a SYN-ACK).
    fn seq_of(f: &[u8]) -> u32 {
        u32::from_be_bytes(f[38..42].try_into().unwrap())
    }

    /// The half-open count follows every way a connection enters or leaves SYN_RECV: the
    /// ordinary handshake, the FTP gateway undoing a transition (a reply held whole, its FIN
    /// with it), the SYN proxy (our SYN, sent again, the client's reset, the server's
    /// SYN-ACK), a reload and expiry. Before, the gateway's undo put a connection back into
    /// SYN_RECV without counting it (`set_tcp_state` left the count to its callers), so the
    /// count fell below the table's and `auto` engaged late.
    #[test]
    fn the_half_open_count_follows_every_state_change() {
        let mut e = MemEngine::new(config(), 1);
        let mut now = S;
        let check = |e: &MemEngine, want: u32, what: &str| {
            let (count, scan) = half_open(e);
            assert_eq!((count, scan), (want, want), "{what}: (count, connections in SYN_RECV)");
        };
        // The ordinary way: an FTP control connection, SYN and the server's SYN-ACK.
        assert_eq!(client(&mut e, now, 40000, 21, TCP_SYN, 100, 0, b"").len(), 1);
        check(&e, 1, "a SYN");
        assert_eq!(server(&mut e, now, 21, 40000, TCP_SYN | TCP_ACK, 5000, 101, b"").len(), 1);
        check(&e, 1, "the server's SYN-ACK");
        // A PASV without ACK (a client's crafted segment: no transition), and the server's
        // reply, the start of a 227, held whole by the gateway with its FIN: the FIN did not
        // go out, the connection is back in SYN_RECV.
        assert_eq!(client(&mut e, now, 40000, 21, TCP_PSH, 101, 0, b"PASV\r\n").len(), 1);
        check(&e, 1, "a PASV without ACK");
        let held = server(&mut e, now, 21, 40000, TCP_ACK | TCP_PSH | TCP_FIN, 5001, 107, b"227 Entering Pass");
        assert!(held.is_empty());
        assert_eq!(e.workers[0].core().list_conns()[0].state, "SYN_RECV");
        check(&e, 1, "a reply held with its FIN");
        // The client's ACK completes the handshake.
        assert_eq!(client(&mut e, now, 40000, 21, TCP_ACK, 107, 5001, b"").len(), 1);
        check(&e, 0, "the client's ACK");

        // The SYN proxy: the cookie (no state), then the client's ACK (our SYN out).
        let syn_ack = client(&mut e, now, 40001, 80, TCP_SYN, 200, 0, b"");
        let cookie = seq_of(&syn_ack[0]);
        check(&e, 0, "a SYN answered with a cookie");
        assert_eq!(client(&mut e, now, 40001, 80, TCP_ACK, 201, cookie + 1, b"").len(), 1);
        check(&e, 1, "our SYN to the server");
        // The client's data waits, and is our SYN again a second later.
        assert!(client(&mut e, now, 40001, 80, TCP_ACK | TCP_PSH, 201, cookie + 1, b"GET").is_empty());
        check(&e, 1, "client data held");
        now += 2 * S;
        assert_eq!(client(&mut e, now, 40001, 80, TCP_ACK | TCP_PSH, 201, cookie + 1, b"GET").len(), 1);
        check(&e, 1, "our SYN again");
        // The server answers: both handshakes done, the held data goes.
        assert_eq!(server(&mut e, now, 80, 40001, TCP_SYN | TCP_ACK, 9000, 201, b"").len(), 2);
        check(&e, 0, "the server's SYN-ACK");

        // Another proxied connection, reset by the client while waiting.
        let syn_ack = client(&mut e, now, 40002, 80, TCP_SYN, 300, 0, b"");
        let cookie = seq_of(&syn_ack[0]);
        assert_eq!(client(&mut e, now, 40002, 80, TCP_ACK, 301, cookie + 1, b"").len(), 1);
        check(&e, 1, "our SYN to the server");
        assert_eq!(client(&mut e, now, 40002, 80, TCP_RST, 301, 0, b"").len(), 1);
        check(&e, 0, "the client's reset");

        // Two more half-open ones (plain FTP), through a reload, then expiry.
        assert_eq!(client(&mut e, now, 40003, 21, TCP_SYN, 400, 0, b"").len(), 1);
        let syn_ack = client(&mut e, now, 40004, 80, TCP_SYN, 500, 0, b"");
        assert_eq!(client(&mut e, now, 40004, 80, TCP_ACK, 501, seq_of(&syn_ack[0]) + 1, b"").len(), 1);
        check(&e, 2, "two half-open");
        e.reload(config(), now);
        check(&e, 2, "a reload");
        now += 100 * S;
        e.workers[0].core_mut().expire_all(now);
        check(&e, 0, "expired");
    }
}
