//! The FTP gateway's glue: the session of a control connection, each control segment through
//! [`ferrovs_ftp_alg`] (the quick path for segments it has nothing to do with), its actions, and
//! the pinhole broker the gateway asks for data connections.

use super::*;
use crate::wire::view::{Tcp, TCP_HEADER_LEN};

impl<Q: BufAlloc> Worker<Q> {
    /// Give control connection `idx` (service `si`, real server `di`) its FTP gateway session:
    /// a new one, or (`resume`: a cluster peer carried it until now) one continuing the
    /// peer's sequence-number translation.
    pub(super) fn start_ftp_session(
        &mut self,
        si: usize,
        di: usize,
        idx: u32,
        resume: Option<(alg::SeqShift, alg::SeqShift)>,
    ) {
        let svc = &self.snap.services[si];
        let opts = svc.ftp.clone().unwrap_or_default();
        let c = self.flows.get(idx);
        let mode = match svc.dests[di].forward {
            Forward::Nat => alg::Mode::Nat,
            Forward::Fnat => alg::Mode::Fnat { local: addr_to_ip(self.flows.laddr_of(c)) },
            Forward::Dr | Forward::Tunnel => alg::Mode::Dr,
        };
        let params = alg::SessionParams {
            mode,
            client: std::net::SocketAddr::new(addr_to_ip(c.client()), c.cport),
            vip: std::net::SocketAddr::new(addr_to_ip(self.flows.vip_of(c).0), self.flows.vip_of(c).1),
            real: std::net::SocketAddr::new(addr_to_ip(self.flows.rs_of(c).0), self.flows.rs_of(c).1),
            allow_foreign_port_address: opts.allow_foreign_port_address,
            pinhole_timeout: opts.pinhole_timeout as u64 * 1_000_000_000,
        };
        let mut session = match resume {
            None => alg::FtpSession::new(params),
            Some((o, r)) => alg::FtpSession::resume(params, o, r),
        };
        session.set_allow_low_data_ports(opts.allow_low_data_ports);
        session.set_max_payload(self.ftp_max_payload(idx));
        self.flows.cold_mut(idx).alg = Some(Box::new(session));
        self.flows.get_mut(idx).flags |= F_ALG;
    }

    /// Run the FTP gateway on a control-connection segment. Returns
    /// `Err(next)` when the segment must not be forwarded as is, and the parse of the
    /// segment now in `pkt` when the gateway replaced its payload.
    ///
    /// The segments that need nothing from the gateway (no data, a retransmission, a line it
    /// skips: floods of tiny segments among them) are only translated, here; the others go
    /// to [`Worker::ftp_segment_full`].
    #[inline(always)]
    pub(super) fn ftp_segment(
        &mut self,
        idx: u32,
        dir: Dir,
        pkt: &mut Q::Buf,
        p: &Parsed,
    ) -> Result<Option<Parsed>, Next> {
        // (A SYN, FIN or RST: the full path, which starts or ends the session's pinholes.)
        if p.proto != PROTO_TCP || p.tcp_flags & (TCP_SYN | parse::TCP_FIN | parse::TCP_RST) != 0 {
            return self.ftp_segment_full(idx, dir, pkt, p);
        }
        let adir = if dir == Dir::In { alg::Dir::Original } else { alg::Dir::Reply };
        let Ok((seq, ack)) = Tcp::at(pkt.data(), p.l4).map(|t| (t.seq(), t.ack())) else { return Ok(None) };
        let Some(s) = self.flows.cold_mut(idx).alg.as_deref_mut() else { return Ok(None) };
        // Out of the window (see `ftp_out_of_window`) or taken, in one look at the stream.
        match s.on_segment_quick_in(adir, seq, &pkt.data()[p.payload..p.end], MAX_TCP_WINDOW) {
            alg::Quick::Forward => {}
            alg::Quick::OutOfWindow => return Err(Next::Drop(DropReason::OutOfWindow)),
            alg::Quick::Full => return self.ftp_segment_full(idx, dir, pkt, p),
        }
        // No number moves (no rewrite yet: most sessions, and every flood's) and no options
        // (SACK edges) to look at: the segment leaves with its own numbers.
        if s.unshifted() && p.payload <= p.l4 + TCP_HEADER_LEN {
            return Ok(None);
        }
        let new_ack = if p.tcp_flags & TCP_ACK != 0 { s.map_ack(adir, ack) } else { ack };
        let new_seq = s.map_seq(adir, seq);
        let opt_delta = self.ftp_tcp_options(idx, adir, pkt, p);
        if new_seq != seq || new_ack != ack || opt_delta != 0 {
            ftp_set_seq_ack(pkt.data_mut(), p.l4, new_seq, new_ack, opt_delta);
        }
        Ok(None)
    }

    /// [`Worker::ftp_segment`] through the gateway's parser.
    #[inline(never)]
    pub(super) fn ftp_segment_full(
        &mut self,
        idx: u32,
        dir: Dir,
        pkt: &mut Q::Buf,
        p: &Parsed,
    ) -> Result<Option<Parsed>, Next> {
        if p.proto != PROTO_TCP {
            return Ok(None);
        }
        // The gateway reads the payload (as far as the header's length says) and may rewrite
        // the segment with fresh checksums (`write_segment`): not one whose IPv4 header
        // checksum fails (Linux drops it in `ip_rcv`, before its FTP helper sees it).
        if !csum::ip_header_ok(pkt.data(), p.l3, p.v6) {
            return Err(Next::Drop(DropReason::IpBadChecksum));
        }
        // Nor one whose payload was corrupted (its TCP checksum fails: Linux's `tcp_error`
        // marks it INVALID, never given to the helper): a rewrite would send the corruption
        // on with a fresh checksum, and the parser would take it as the peer's words (a
        // pinhole for the port a flipped bit named). Checked before the session reads it, as
        // a rewrite is only known after: every segment with data this path parses (the lines
        // the quick path hands on), and a FIN or RST without data, which in sequence ends the
        // session's pinholes (a corrupted one, which the server drops, must not end them);
        // not the bare segments it only translates (a SYN, the cheap path's ACKs).
        let ends = p.tcp_flags & (parse::TCP_FIN | parse::TCP_RST) != 0;
        if (p.payload_len() > 0 || ends) && !csum::l4_ok(pkt.data(), p) {
            return Err(Next::Drop(DropReason::L4BadChecksum));
        }
        let now = self.now;
        let adir = if dir == Dir::In { alg::Dir::Original } else { alg::Dir::Reply };
        let Ok((seq, ack)) = Tcp::at(pkt.data(), p.l4).map(|t| (t.seq(), t.ack())) else { return Ok(None) };
        // A SYN's payload (TCP Fast Open) starts at isn + 1: the gateway is
        // fed that, after `set_isn` (Linux's nf_conntrack_ftp never sees SYN
        // data; we do, at the right offset: `p.payload` is past the options).
        let syn = p.tcp_flags & TCP_SYN != 0;
        let data_seq = seq.wrapping_add(syn as u32);
        let plen = p.payload_len();
        let mut actions = std::mem::take(&mut self.actions);
        actions.expectations.clear();
        actions.events.clear();
        // The session leaves its slot while it runs, so the pinhole broker can look at the
        // flow table (other sessions' liveness) beside it.
        let Some(mut s) = self.flows.cold_mut(idx).alg.take() else {
            self.actions = actions;
            return Ok(None);
        };
        let svc = self.flows.get(idx).svc as usize;
        if syn {
            s.set_isn(adir, seq);
        }
        // (After `set_isn`: a SYN's data is in the window it opens.)
        if ftp_out_of_window(&s, adir, data_seq, plen) {
            self.flows.cold_mut(idx).alg = Some(s);
            self.actions = actions;
            return Err(Next::Drop(DropReason::OutOfWindow));
        }
        // A FIN or RST ends the session's pinholes only exactly in sequence (RFC 5961's rule for
        // resets): a blind one, which would have to guess the sequence number too, ends nothing.
        let in_seq = s.next_seq(adir).is_none_or(|n| n == data_seq);
        let shifts = (s.seq_shift(alg::Dir::Original), s.seq_shift(alg::Dir::Reply));
        let verdict = if plen > 0 {
            let mut pins = Broker::new(self, idx);
            s.on_segment_with(now, adir, data_seq, &pkt.data()[p.payload..p.end], &mut actions, &mut pins)
        } else {
            alg::Verdict::Forward
        };
        // Cluster: a rewrite moved the sequence numbers; the peers must know to carry on.
        let moved = self.sync_on && shifts != (s.seq_shift(alg::Dir::Original), s.seq_shift(alg::Dir::Reply));
        let new_ack = if p.tcp_flags & TCP_ACK != 0 { s.map_ack(adir, ack) } else { ack };
        let new_seq = match &verdict {
            // A Replace names its first data byte; on a SYN the SYN comes first.
            alg::Verdict::Replace { seq, .. } => s.map_seq(adir, *seq).wrapping_sub(syn as u32),
            _ => s.map_seq(adir, seq),
        };
        // Where the segment's data ends once translated: a Replace ending anywhere else
        // (bytes after it held or left for a retransmission) must not carry the segment's FIN.
        let data_end = s.map_seq(adir, data_seq.wrapping_add(p.payload_len() as u32));
        self.flows.cold_mut(idx).alg = Some(s);
        if moved && self.flows.get(idx).flags & F_SYNCED == 0 {
            if let Some(e) = self.seq_entry(idx) {
                self.push_sync(e);
            }
        }
        self.ftp_actions(idx, svc, &actions);
        self.actions = actions;
        if in_seq && (p.tcp_flags & parse::TCP_RST != 0 || (dir == Dir::In && p.tcp_flags & parse::TCP_FIN != 0)) {
            // The client closed the control connection, or a side reset it: the session asks
            // for no more data connections. Its pinholes left unused (a PASV whose data
            // connection never came: lftp asks ahead of time) and its TLS pin go now, not at
            // the pinhole timeout; the connection itself lingers (FIN_WAIT, and in DR, which
            // sees no server FIN, for the whole FIN_WAIT timeout). A DR passive pinhole names
            // no port: a stale one would refuse this client's next sessions on other real
            // servers as ambiguous and take their data connections until it expired.
            let gen = self.flows.get(idx).gen;
            self.expect.remove_session(idx, gen);
        }
        // Expectations the segment replaced or ended: their reserved local ports (full NAT).
        self.release_unreserved();
        // SACK edges and the handshake MSS live in the options (see `ftp_tcp_options`).
        let opt_delta = self.ftp_tcp_options(idx, adir, pkt, p);
        match verdict {
            alg::Verdict::Hold => {
                bump(&self.svc_counters[svc].ftp.held_segments, 1);
                Err(Next::Drop(DropReason::AlgHold))
            }
            alg::Verdict::Forward => {
                if new_seq != seq || new_ack != ack || opt_delta != 0 {
                    ftp_set_seq_ack(pkt.data_mut(), p.l4, new_seq, new_ack, opt_delta);
                }
                Ok(None)
            }
            alg::Verdict::Replace { payload, .. } => {
                let wire_end = new_seq.wrapping_add(syn as u32).wrapping_add(payload.len() as u32);
                let keep_fin = wire_end == data_end;
                let mut np = *p;
                self.ftp_replace(idx, dir, pkt, &mut np, &payload, new_seq, new_ack, keep_fin)?;
                bump(&self.svc_counters[svc].ftp.rewrites, 1);
                Ok(Some(np))
            }
        }
    }

    /// Counts (and, for TLS, pins) what the gateway reported. Expectations were already
    /// installed by the [`Broker`] while the segment was parsed.
    pub(super) fn ftp_actions(&mut self, idx: u32, svc: usize, actions: &alg::Actions) {
        if actions.events.is_empty() {
            return;
        }
        let sc = self.svc_counters.clone();
        let Some(counters) = sc.get(svc).map(|c| &c.ftp) else { return };
        for ev in &actions.events {
            match ev {
                alg::Event::Rewrite | alg::Event::Malformed | alg::Event::Refused | alg::Event::Moved { .. } => {}
                alg::Event::BounceRefused { named, port } => {
                    bump(&counters.bounce_refused, 1);
                    if self.bounce_log.allow(self.now) {
                        let client = self.flows.get(idx).client();
                        let suppressed = self.bounce_log.take_suppressed();
                        tracing::warn!(client = %addr_to_ip(client), %named, port, suppressed, "FTP PORT/EPRT bounce attempt refused");
                    }
                }
                alg::Event::LowPort { .. } => bump(&counters.low_ports_refused, 1),
                alg::Event::Unsolicited => bump(&counters.unsolicited_replies, 1),
                alg::Event::TlsRefused => bump(&counters.tls_refused, 1),
                alg::Event::TlsFallback => {
                    bump(&counters.tls_fallbacks, 1);
                    let c = self.flows.get(idx);
                    let val = ExpVal {
                        svc: svc as u16,
                        dest: c.dest,
                        rs: self.flows.rs_of(c).0,
                        rport: None,
                        vip: self.flows.vip_of(c).0,
                        parent: idx,
                        parent_gen: c.gen,
                        expires: u64::MAX,
                        client: 0,
                        cport: 0,
                    };
                    let (client, vip) = (c.client(), self.flows.vip_of(c).0);
                    let flows = &self.flows;
                    let alive = |i: u32, g: u32| flows.try_get(i).is_some_and(|c| c.gen == g);
                    if !self.expect.pin(client, vip, val, alive) {
                        // Another live TLS session of this client pins the VIP to its server
                        // (new connections of this client already follow it).
                        bump(&counters.expectations_refused, 1);
                    }
                }
                alg::Event::Oversized => bump(&counters.oversized_lines, 1),
            }
        }
    }
}

impl<Q: BufAlloc> Worker<Q> {
    /// Full NAT: gives back the local ports reserved for active-mode expectations that went
    /// unused (replaced by a newer one of their session, evicted, ended with their control
    /// connection, unconfigured). Called right after whatever removed them. A reservation is
    /// released only if it is still the one made for that expectation (same address, port and
    /// expiry) and no expectation waits under that key any more.
    pub(super) fn release_unreserved(&mut self) {
        while let Some((key, expires)) = self.expect.pop_unreserved() {
            let ExpKey::Active(_, la, port) = key else { continue };
            if self.expect.get(&key).is_some() {
                continue;
            }
            if let Some(k) = self.reserved.iter().position(|&(a, p, until)| a == la && p == port && until == expires) {
                self.reserved.swap_remove(k);
                self.lports.release(la, PROTO_TCP, port);
            }
        }
    }
}

/// Local ports a worker may hold reserved for announced full-NAT active FTP data connections
/// (each session holds at most `max_expectations` live ones; a replaced or evicted one gives its
/// port back at once, see [`Worker::release_unreserved`]).
pub(super) const MAX_RESERVED: usize = 65_536;

/// How many VIP ports after the announced one a clashing passive expectation may move to.
pub(super) const MOVE_TRIES: u16 = 64;

/// The worker's side of the gateway's [`alg::Pinholes`]: installs the expectations one control
/// connection announces, while its reply is being parsed, and settles clashes with other
/// sessions' expectations (see [`crate::flow::expect`] for the rules and what Linux does).
pub(super) struct Broker<'a> {
    table: &'a mut ExpectTable,
    flows: &'a FlowTable,
    snap: &'a Snapshot,
    counters: &'a [ServiceCounters],
    idx: u32,
    gen: u32,
    svc: u16,
    dest: u16,
    fwd: Forward,
    per_session: usize,
    now: u64,
    /// Cluster: expectations go to the peers too.
    sync: Option<&'a mut Vec<SyncEntry>>,
    /// Full NAT: the control connection's local address, the worker's local ports and its
    /// reservations (active data connections).
    laddr: Addr,
    lports: &'a mut LportPools,
    reserved: &'a mut Vec<(Addr, u16, u64)>,
}

impl<'a> Broker<'a> {
    fn new<Q: BufAlloc>(w: &'a mut Worker<Q>, idx: u32) -> Self {
        let c = w.flows.get(idx);
        let (gen, svc, dest, fwd) = (c.gen, c.svc, c.dest, c.fwd);
        let laddr = if fwd == Forward::Fnat { w.flows.laddr_of(c) } else { 0 };
        let per_session = w
            .snap
            .services
            .get(svc as usize)
            .and_then(|s| s.ftp.as_ref())
            .map_or(4, |f| usize::from(f.max_expectations));
        Broker {
            table: &mut w.expect,
            flows: &w.flows,
            snap: &w.snap,
            counters: &w.svc_counters,
            idx,
            gen,
            svc,
            dest,
            fwd,
            per_session,
            now: w.now,
            sync: if w.sync_on && w.sync_out.len() < SYNC_MAX_PER_POLL { Some(&mut w.sync_out) } else { None },
            laddr,
            lports: &mut w.lports,
            reserved: &mut w.reserved,
        }
    }

    fn alive(&self, v: &ExpVal) -> bool {
        v.expires > self.now && self.flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen)
    }

    fn mine(&self, v: &ExpVal) -> bool {
        v.parent == self.idx && v.parent_gen == self.gen
    }

    /// Another live session expects `key`.
    fn taken(&self, key: &ExpKey) -> bool {
        self.table.chain(key).any(|v| !self.mine(v) && self.alive(v))
    }

    fn ftp(&self, svc: u16) -> Option<&'a crate::pipeline::counters::FtpCounters> {
        self.counters.get(svc as usize).map(|c| &c.ftp)
    }

    /// Installs `key -> (rs, rport)` for this session, replacing its own older one with the
    /// same key and dropping dead ones.
    fn install(&mut self, key: ExpKey, rs: Addr, rport: Option<u16>, vip: Addr, expires: u64) {
        self.install_for(key, rs, rport, vip, expires, 0, 0)
    }

    /// [`Broker::install`] naming the client (full NAT active).
    #[allow(clippy::too_many_arguments)]
    fn install_for(
        &mut self,
        key: ExpKey,
        rs: Addr,
        rport: Option<u16>,
        vip: Addr,
        expires: u64,
        client: Addr,
        cport: u16,
    ) {
        let (now, flows, idx, gen) = (self.now, self.flows, self.idx, self.gen);
        let mut dead = 0;
        self.table.retain_key(&key, |v| {
            let alive = v.expires > now && flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen);
            let own = v.parent == idx && v.parent_gen == gen;
            dead += u64::from(!alive);
            alive && !own
        });
        let val = ExpVal {
            svc: self.svc,
            dest: self.dest,
            rs,
            rport,
            vip,
            parent: idx,
            parent_gen: gen,
            expires,
            client,
            cport,
        };
        // A full-NAT active expectation waits on a port reserved on the control connection's
        // local address (keyed by it): synced with that address and the client's data port
        // (format version 5), so a survivor expects the real server's connection too.
        let fnat_active = match key {
            ExpKey::Active(_, la, _) if self.fwd == Forward::Fnat => Some((la, cport)),
            _ => None,
        };
        if let Some(out) = self.sync.as_mut() {
            use crate::cluster::sync::ExpectKind as K;
            let c = flows.get(idx);
            let (kind, port) = match key {
                ExpKey::Passive(_, _, p) => (K::Passive, p),
                ExpKey::PassiveAny(..) => (K::PassiveAny, 0),
                ExpKey::Active(_, _, p) => (K::Active, p),
                ExpKey::DrActive(_, p, _) => (K::DrActive, p),
            };
            out.push(SyncEntry::Expect(crate::cluster::sync::ExpectSync {
                kind,
                port,
                rport: rport.unwrap_or(0),
                ctl_cport: c.cport,
                ctl_vport: self.flows.vip_of(c).1,
                client: c.client(),
                vip: self.flows.vip_of(c).0,
                rs,
                timeout_s: (expires.saturating_sub(now) / 1_000_000_000) as u32,
                fnat: fnat_active,
            }));
        }
        let d = self.table.insert(key, val, self.per_session);
        if let Some(c) = self.ftp(self.svc) {
            bump(&c.expectations_created, 1);
            bump(&c.expectations_expired, dead);
        }
        if let Some(c) = d.replaced.and_then(|s| self.ftp(s)) {
            bump(&c.expectations_replaced, 1);
        }
        if let Some(c) = d.evicted.and_then(|s| self.ftp(s)) {
            bump(&c.expectations_evicted, 1);
        }
    }

    fn refuse(&self) -> alg::Grant {
        if let Some(c) = self.ftp(self.svc) {
            bump(&c.expectations_refused, 1);
        }
        alg::Grant::Refused
    }
}

impl alg::Pinholes for Broker<'_> {
    fn open(&mut self, e: &alg::Expectation) -> alg::Grant {
        let (client, vip, rs) = (parse::ip_to_addr(e.client), parse::ip_to_addr(e.vip), parse::ip_to_addr(e.real));
        match e.kind {
            alg::ExpectKind::Passive { vip_port: Some(p), real_port } => {
                // A VIP port is free for this session if no other live session expects it from
                // this client and no other service listens on it (the expectation would take
                // that service's connections from this client).
                let free = |q: u16| {
                    !self.taken(&ExpKey::Passive(client, vip, q))
                        && self.snap.service(vip, PROTO_TCP, q).is_none_or(|o| o == self.svc as usize)
                };
                let mut q = p;
                let mut found = None;
                for _ in 0..MOVE_TRIES {
                    if free(q) {
                        found = Some(q);
                        break;
                    }
                    q = if q == u16::MAX { 1024 } else { q + 1 };
                }
                let Some(q) = found else { return self.refuse() };
                self.install(ExpKey::Passive(client, vip, q), rs, real_port.or(Some(p)), vip, e.expires);
                if q == p {
                    alg::Grant::Open
                } else {
                    if let Some(c) = self.ftp(self.svc) {
                        bump(&c.expectations_moved, 1);
                    }
                    alg::Grant::OpenAt(q)
                }
            }
            alg::ExpectKind::Passive { vip_port: None, real_port } => {
                // DR: the balancer never sees the port the server announced, so two sessions
                // of one client address waiting at once cannot be told apart. Towards the same
                // real server they queue (oldest first, either is right); towards another
                // server the newer is refused: its transfer fails rather than risk receiving
                // the other session's data.
                let key = ExpKey::PassiveAny(client, vip);
                let other_rs = self.table.chain(&key).any(|v| !self.mine(v) && self.alive(v) && v.rs != rs);
                if other_rs {
                    if let Some(c) = self.ftp(self.svc) {
                        bump(&c.expectations_ambiguous, 1);
                    }
                    return self.refuse();
                }
                self.install(key, rs, real_port, vip, e.expires);
                alg::Grant::Open
            }
            alg::ExpectKind::Active { client_port, .. } if self.fwd == Forward::Fnat => {
                // The real server is told to connect to a port reserved on the control
                // connection's local address; that connection becomes VIP:20 -> client:port.
                if self.reserved.len() >= MAX_RESERVED {
                    return self.refuse();
                }
                let Some(port) = self.lports.take_on(self.laddr, PROTO_TCP) else {
                    return self.refuse();
                };
                let key = ExpKey::Active(rs, self.laddr, port);
                self.install_for(key, rs, None, vip, e.expires, client, client_port);
                self.reserved.push((self.laddr, port, e.expires));
                alg::Grant::OpenAt(port)
            }
            alg::ExpectKind::Active { client_port, .. } => {
                let key = if self.fwd.two_way() {
                    ExpKey::Active(rs, client, client_port)
                } else {
                    ExpKey::DrActive(client, client_port, vip)
                };
                if self.taken(&key) {
                    return self.refuse();
                }
                self.install(key, rs, None, vip, e.expires);
                alg::Grant::Open
            }
        }
    }
}

/// Is a control segment of `len` bytes from `seq` (its first data byte) out of the window?
/// Data beyond the largest window TCP can announce (65535 << 14) past what the gateway
/// expects: no receiver takes it, and fed to the gateway it would look like a hole and stop it
/// reading until the next line (nf_conntrack's window tracking keeps such segments from its
/// FTP helper too). Dropped and counted.
#[inline(always)]
pub(super) fn ftp_out_of_window(s: &alg::FtpSession, adir: alg::Dir, seq: u32, len: usize) -> bool {
    let ahead = s.next_seq(adir).map_or(0, |n| seq.wrapping_sub(n));
    len > 0 && ahead > MAX_TCP_WINDOW && ahead < 1 << 31
}

/// Write a control segment's translated sequence and acknowledgement numbers (at `l4`) and
/// fix the TCP checksum, with `opt_delta` for options the gateway changed.
pub(super) fn ftp_set_seq_ack(d: &mut [u8], l4: usize, seq: u32, ack: u32, opt_delta: u32) {
    let Ok(mut t) = Tcp::at_mut(d, l4) else { return };
    let delta = csum::add(opt_delta, csum::add(t.rewrite_seq(seq), t.rewrite_ack(ack)));
    t.adjust_checksum(delta);
}
