//! Cluster connection sync on the worker's side: what it queues for the peers (creations, changes,
//! deletions, the FTP gateway's sequence offsets) and the backup state it installs from them
//! ([`crate::cluster::sync`] is the format, `syncd` the I/O).

use super::*;

/// What became of a peer's sync entry (each counted under its own worker counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Synced {
    /// Installed or updated here: `sync_installed`.
    Installed,
    /// Refused (no such service or real server, table full, ...): `sync_skipped`.
    Skipped,
    /// About a connection this node carries itself (not a backup): left as it is,
    /// `sync_carried`.
    Carried,
}

impl From<bool> for Synced {
    fn from(ok: bool) -> Self {
        if ok {
            Synced::Installed
        } else {
            Synced::Skipped
        }
    }
}

/// A backup entry's time to live (ns): what its owner says is left (`timeout_s`), at most this
/// node's timeout for its state (`local`, ns). IPVS takes the sender's figure as it comes; a
/// peer with longer timeouts, or a forged message, would otherwise keep entries here for up
/// to the table's span (days), each holding a flow slot and, for full NAT, a local port.
fn synced_timeout(timeout_s: u32, local: u64) -> u64 {
    (u64::from(timeout_s) * 1_000_000_000).min(local)
}

impl<Q: BufAlloc> Worker<Q> {
    pub(super) fn push_sync(&mut self, e: SyncEntry) {
        if self.sync_out.len() < SYNC_MAX_PER_POLL {
            self.sync_out.push(e);
        } else {
            bump(&self.counters.sync_skipped, 1);
        }
    }

    /// Is `c` a connection of a one-packet service (`one_packet`)? It lives for one datagram
    /// and is not synced (IPVS's `ip_vs_sync_conn` skips `IP_VS_CONN_F_ONE_PACKET` ones).
    pub(super) fn one_packet(&self, c: &flow::Conn) -> bool {
        c.snap_gen == self.snap_gen && self.snap.services.get(c.svc as usize).is_some_and(|s| s.one_packet)
    }

    /// The sync entry of connection `idx` as it is now.
    pub(super) fn conn_entry(&self, idx: u32) -> SyncEntry {
        let c = self.flows.get(idx);
        let k = self.flows.cold(idx);
        SyncEntry::Conn(crate::cluster::sync::ConnSync {
            proto: c.proto,
            state: c.state as u8,
            fwd: match c.fwd {
                Forward::Nat => 0,
                Forward::Dr => 1,
                Forward::Tunnel => 2,
                Forward::Fnat => 3,
            },
            data: c.flags & F_DATA != 0,
            client: c.client(),
            cport: c.cport,
            vip: self.flows.vip_of(c).0,
            vport: self.flows.vip_of(c).1,
            rs: self.flows.rs_of(c).0,
            rport: self.flows.rs_of(c).1,
            timeout_s: (c.expires_in(self.now) / 1_000_000_000).min(u32::MAX as u64) as u32,
            proxy_delta: k.proxy.as_ref().filter(|p| p.established).map(|p| p.delta),
            fnat: (c.fwd == Forward::Fnat).then(|| (self.flows.laddr_of(c), c.lport())),
        })
    }

    /// Queue connection `idx` for the peers (a creation, a state change or a refresh).
    pub(super) fn sync_conn(&mut self, idx: u32) {
        let c = self.flows.get(idx);
        if !self.sync_on || c.flags & F_SYNCED != 0 || self.one_packet(c) {
            return;
        }
        let e = self.conn_entry(idx);
        self.flows.cold_mut(idx).synced_at = self.now.max(1);
        self.push_sync(e);
        if let Some(e) = self.seq_entry(idx) {
            self.push_sync(e);
        }
    }

    /// Queue connection `idx` if its state is no longer `before` or it was never sent: the
    /// sync [`Worker::forward`] leaves until the FTP gateway has said whether a FIN went out
    /// (a FIN it keeps back leaves the state as it was, and nothing to send).
    pub(super) fn sync_moved(&mut self, idx: u32, before: crate::flow::tcpstate::TcpState) {
        if self.flows.get(idx).state != before || self.flows.cold(idx).synced_at == 0 {
            self.sync_conn(idx);
        }
    }

    /// The gateway's sequence-number translation of NAT / full-NAT control connection `idx`,
    /// if a rewrite moved it (a peer taking the connection over needs it).
    pub(super) fn seq_entry(&self, idx: u32) -> Option<SyncEntry> {
        let c = self.flows.get(idx);
        let s = self.flows.cold(idx).alg.as_deref()?;
        if !c.fwd.two_way() {
            return None;
        }
        let (orig, reply) = (s.seq_shift(alg::Dir::Original), s.seq_shift(alg::Dir::Reply));
        if orig == alg::SeqShift::default() && reply == alg::SeqShift::default() {
            return None;
        }
        Some(SyncEntry::Seq(crate::cluster::sync::SeqSync {
            client: c.client(),
            cport: c.cport,
            vip: self.flows.vip_of(c).0,
            vport: self.flows.vip_of(c).1,
            lport: (c.fwd == Forward::Fnat).then_some(c.lport()),
            orig,
            reply,
        }))
    }

    /// A peer's gateway translation for its control connection: this node's backup copy
    /// continues from it.
    pub(super) fn install_synced_seq(&mut self, q: &crate::cluster::sync::SeqSync) -> Synced {
        let key = FlowKey { proto: PROTO_TCP, src: q.client, sport: q.cport, dst: q.vip, dport: q.vport };
        let Some((idx, Dir::In)) = self.flows.lookup(&key) else { return Synced::Skipped };
        let c = self.flows.get(idx);
        if c.flags & F_SYNCED == 0 {
            return Synced::Carried; // this node carries it: its own gateway knows better
        }
        if !c.fwd.two_way() {
            return Synced::Skipped;
        }
        if c.flags & F_ALG == 0 {
            // No FTP control connection here (its backup got no gateway when installed): a
            // gateway now would shift the sequence numbers of another protocol's stream.
            return Synced::Skipped;
        }
        let (si, di) = (c.svc as usize, c.dest as usize);
        if si >= self.snap.services.len() || di >= self.snap.services[si].dests.len() {
            return Synced::Skipped;
        }
        self.start_ftp_session(si, di, idx, Some((q.orig, q.reply)));
        Synced::Installed
    }

    /// Re-send live connections not sent for `sync_refresh`, `budget` slots (a tick's share).
    pub(super) fn sync_refresh_scan(&mut self, now: u64, budget: usize) {
        let n = self.flows.slots();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            let i = (self.sync_pos % n) as u32;
            self.sync_pos = (self.sync_pos + 1) % n;
            let c = self.flows.get(i);
            if c.live
                && c.flags & F_SYNCED == 0
                && !c.expired(now)
                && now.saturating_sub(self.flows.cold(i).synced_at) >= self.sync_refresh
            {
                self.sync_conn(i);
            }
        }
    }

    /// Install state a peer sent (see [`crate::cluster::sync`]): backup connections (not counted by
    /// the schedulers until a packet arrives for them), removals of backup connections,
    /// persistence templates and FTP expectations.
    pub fn apply_sync(&mut self, entries: &[SyncEntry]) {
        for e in entries {
            let outcome = match *e {
                SyncEntry::Conn(c) => self.install_synced_conn(&c),
                SyncEntry::Delete { proto, client, cport, vip, vport, .. } => {
                    let key = FlowKey { proto, src: client, sport: cport, dst: vip, dport: vport };
                    match self.flows.lookup(&key) {
                        Some((idx, Dir::In)) if self.flows.get(idx).flags & F_SYNCED != 0 => {
                            self.remove_conn(idx, false);
                            Synced::Installed
                        }
                        // The peer's copy ended; this node's own connection goes on.
                        Some((_, Dir::In)) => Synced::Carried,
                        _ => Synced::Skipped,
                    }
                }
                SyncEntry::Template(t) => self.install_synced_template(&t).into(),
                SyncEntry::Expect(x) => self.install_synced_expect(&x).into(),
                SyncEntry::Seq(q) => self.install_synced_seq(&q),
            };
            let c = match outcome {
                Synced::Installed => &self.counters.sync_installed,
                Synced::Skipped => &self.counters.sync_skipped,
                Synced::Carried => &self.counters.sync_carried,
            };
            bump(c, 1);
        }
    }

    pub(super) fn find_dest(&self, si: usize, rs: Addr, rport: u16, vport: u16) -> Option<usize> {
        self.snap.services[si]
            .dests
            .iter()
            .position(|d| d.addr == rs && d.port.unwrap_or(vport) == rport)
            .or_else(|| self.snap.services[si].dests.iter().position(|d| d.addr == rs))
    }

    /// A peer's connection as a backup entry here (or its state and timeout, if known). A
    /// refusal is counted (`sync_skipped`, by the caller) and logged, rate-limited, with why:
    /// a backup missing when its owner dies is a connection lost at failover.
    pub(super) fn install_synced_conn(&mut self, s: &crate::cluster::sync::ConnSync) -> Synced {
        let why = match self.try_install_synced_conn(s) {
            Ok(outcome) => return outcome,
            Err(why) => why,
        };
        if self.sync_log.allow(self.now) {
            let suppressed = self.sync_log.take_suppressed();
            let local = s.fnat.map(|(a, p)| std::net::SocketAddr::new(addr_to_ip(a), p));
            tracing::warn!(
                worker = self.id,
                client = %std::net::SocketAddr::new(addr_to_ip(s.client), s.cport),
                vip = %std::net::SocketAddr::new(addr_to_ip(s.vip), s.vport),
                ?local,
                suppressed,
                "cluster sync: a peer's connection not installed: {why}"
            );
        }
        Synced::Skipped
    }

    fn try_install_synced_conn(&mut self, s: &crate::cluster::sync::ConnSync) -> Result<Synced, &'static str> {
        let key = FlowKey { proto: s.proto, src: s.client, sport: s.cport, dst: s.vip, dport: s.vport };
        if let Some((idx, dir)) = self.flows.lookup(&key) {
            if dir != Dir::In {
                // Another connection's reply direction (a peer never sends that): left alone.
                return Err("its addresses are another connection's reply here");
            }
            // Known: a backup entry follows its owner's state and timeout; a connection this
            // node carries traffic for keeps its own.
            let c = self.flows.get_mut(idx);
            if c.flags & F_SYNCED == 0 {
                return Ok(Synced::Carried);
            }
            if let Some(st) = crate::flow::tcpstate::TcpState::from_u8(s.state) {
                c.state = st;
            }
            let t = synced_timeout(s.timeout_s, self.timeouts[c.state as usize]);
            c.set_expires(self.now, self.now + t);
            return Ok(Synced::Installed);
        }
        let si = match self.snap.service(s.vip, s.proto, s.vport) {
            Some(si) => si,
            // An FTP data connection (a port no service owns): its VIP's FTP service. Not only
            // those flagged `data` (made from an expectation): a DR/tunnel data connection the
            // sender placed by the cluster-wide Maglev choice, without an expectation, is one
            // too, and its backup here saves recreating it after a failover.
            None => {
                match self.snap.services.iter().position(|x| x.vip == s.vip && x.proto == s.proto && x.ftp.is_some()) {
                    Some(si) => si,
                    None => return Err("no service of that VIP and port"),
                }
            }
        };
        let Some(di) = self.find_dest(si, s.rs, s.rport, s.vport) else {
            return Err("its real server is not in the service here");
        };
        let Some(st) = crate::flow::tcpstate::TcpState::from_u8(s.state) else {
            return Err("unknown TCP state");
        };
        // Full NAT: the sender's local address and port, reserved here so this worker never
        // hands them out (an FTP active data connection of an adopted control connection
        // takes ports on that address); both sides must agree it is full NAT.
        let local = match (self.snap.services[si].dests[di].forward == Forward::Fnat, s.fnat) {
            (false, None) => Local::Any,
            (true, Some((la, lport))) => {
                // A port reserved here for a synced full-NAT active expectation: its data
                // connection, opened on the peer, takes the reservation over.
                let expected = s.data && s.proto == PROTO_TCP && !self.reserved.is_empty();
                let held =
                    if expected { self.reserved.iter().position(|&(a, p, _)| a == la && p == lport) } else { None };
                match held {
                    Some(k) => {
                        self.reserved.swap_remove(k);
                    }
                    None if !self.lports.reserve(la, s.proto, lport) => {
                        return Err("its local port is in use here");
                    }
                    None => {}
                }
                Local::Fixed(la, lport)
            }
            _ => return Err("full NAT on one side only"),
        };
        let idx = match self.create_backup(si, di, s, local) {
            Ok(i) => i,
            Err(r) => {
                if let Local::Fixed(la, lport) = local {
                    self.lports.release(la, s.proto, lport);
                }
                return Err(r.label());
            }
        };
        let c = self.flows.get_mut(idx);
        c.state = st;
        c.set_expires(self.now, self.now + synced_timeout(s.timeout_s, self.timeouts[st as usize]));
        if s.data {
            c.flags |= F_DATA;
        }
        if let Some(delta) = s.proxy_delta {
            c.flags |= F_SYNPROXY;
            self.flows.cold_mut(idx).proxy = Some(Box::new(crate::pipeline::synproxy::Proxied {
                isn: 0,
                cookie: 0,
                delta,
                established: true,
                reset: false,
                mss: 536,
                syn_at: 0,
            }));
        }
        // A NAT / full-NAT FTP control connection: a gateway session, so that once this node
        // carries it the commands and replies are still translated (no rewrite so far; a
        // kind-5 entry brings the peer's, `install_synced_seq`).
        let svc = &self.snap.services[si];
        if !s.data && s.proto == PROTO_TCP && svc.is_ftp_control(s.vport) && svc.dests[di].forward.two_way() {
            self.start_ftp_session(si, di, idx, Some(Default::default()));
        }
        if s.data && s.proto == PROTO_TCP && !self.expect.is_empty() {
            self.forget_consumed_expect(s);
            self.release_unreserved();
        }
        Ok(Synced::Installed)
    }

    /// A peer's FTP data connection used its expectation there: this node's copy of that
    /// expectation goes too. Left in place it would live on until its pinhole timeout, the
    /// oldest under its key, and take a later session's data connection with the same client,
    /// VIP and port (one client address, the server picking a port again) to the earlier
    /// session's real server.
    fn forget_consumed_expect(&mut self, s: &crate::cluster::sync::ConnSync) {
        let (rs, rport) = (s.rs, s.rport);
        // Passive: client -> VIP:port, the port the connection came to.
        self.expect.retain_key(&ExpKey::Passive(s.client, s.vip, s.vport), |v| {
            !(v.rs == rs && v.rport.unwrap_or(s.vport) == rport)
        });
        // Active: the real server -> the client's port (NAT), or -> the local address and the
        // port reserved there (full NAT), translated to the client's port.
        let active = match s.fnat {
            Some((la, lport)) => ExpKey::Active(rs, la, lport),
            None => ExpKey::Active(rs, s.client, s.cport),
        };
        self.expect
            .retain_key(&active, |v| !(v.rs == rs && (v.cport == 0 || (v.client == s.client && v.cport == s.cport))));
        // DR: the client's side of an active one; a passive one names no port, and those of
        // one real server queue, so only the oldest goes.
        self.expect.retain_key(&ExpKey::DrActive(s.client, s.cport, s.vip), |v| v.rs != rs);
        let mut gone = false;
        self.expect.retain_key(&ExpKey::PassiveAny(s.client, s.vip), |v| {
            let hit = !gone && v.rs == rs;
            gone |= hit;
            !hit
        });
    }

    /// A connection from a peer's sync: as `create_conn`, but not counted anywhere (the
    /// schedulers, flows_created, the service's connections) until traffic arrives.
    pub(super) fn create_backup(
        &mut self,
        si: usize,
        di: usize,
        s: &crate::cluster::sync::ConnSync,
        local: Local,
    ) -> Result<u32, DropReason> {
        let idx = self.create_conn(si, di, s.client, s.cport, s.vip, s.vport, s.rs, s.rport, local)?;
        // Undo create_conn's accounting: backup state is invisible to the schedulers.
        let counts = &self.snap.conn_counts[si];
        counts.dec_inactive(self.id, di);
        bump(&self.counters.flows_created, u64::MAX);
        let sc = &self.svc_counters[si];
        bump(&sc.conns, u64::MAX);
        bump(&sc.dests[di].conns, u64::MAX);
        bump(&self.counters.flows_active, u64::MAX);
        let c = self.flows.get_mut(idx);
        c.flags &= !F_COUNTED;
        c.flags |= F_SYNCED;
        Ok(idx)
    }

    /// The first packet of a backup connection: from now on it is this node's, counted as
    /// a connection created here.
    #[cold]
    pub(super) fn adopt(&mut self, idx: u32) {
        let (si, di, active) = {
            let c = self.flows.get_mut(idx);
            c.flags &= !F_SYNCED;
            c.flags |= F_COUNTED;
            (c.svc as usize, c.dest as usize, c.state.is_active())
        };
        // Half-open here from now on (the SYN proxy's threshold; a backup counted nothing).
        if self.flows.get(idx).state == crate::flow::tcpstate::TcpState::SynRecv {
            self.half_open += 1;
        }
        if let Some(counts) = self.snap.conn_counts.get(si) {
            if active {
                counts.inc_active(self.id, di);
                self.flows.get_mut(idx).flags |= F_ACTIVE_COUNTED;
            } else {
                counts.inc_inactive(self.id, di);
            }
        }
        bump(&self.counters.flows_created, 1);
        bump(&self.counters.flows_active, 1);
        if let Some(sc) = self.svc_counters.get(si) {
            bump(&sc.conns, 1);
            if let Some(d) = sc.dests.get(di) {
                bump(&d.conns, 1);
            }
        }
    }

    pub(super) fn install_synced_template(&mut self, t: &crate::cluster::sync::TemplateSync) -> bool {
        let Some(si) = self.snap.service(t.vip, t.proto, t.vport) else { return false };
        let Some(di) = self.find_dest(si, t.rs, t.rport, t.vport) else { return false };
        let now = self.now;
        let st = &mut self.svcs[si];
        let Some(pt) = st.persist.as_mut() else { return false };
        pt.insert(addr_to_ip(t.client), di, now, &st.dests);
        true
    }

    pub(super) fn install_synced_expect(&mut self, x: &crate::cluster::sync::ExpectSync) -> bool {
        use crate::cluster::sync::ExpectKind as K;
        let proto = PROTO_TCP;
        let ctl = FlowKey { proto, src: x.client, sport: x.ctl_cport, dst: x.vip, dport: x.ctl_vport };
        let Some((parent, Dir::In)) = self.flows.lookup(&ctl) else { return false };
        let c = self.flows.get(parent);
        // The data connection goes to the control connection's real server, the one its
        // gateway names (`Broker::open`): an entry naming another address is refused.
        if self.flows.rs_of(c).0 != x.rs {
            return false;
        }
        // Only an FTP control connection has expectations (another would open pinholes to
        // any port of its real server).
        let control = self.snap.services.get(c.svc as usize).is_some_and(|s| s.is_ftp_control(x.ctl_vport));
        if !control || c.flags & F_DATA != 0 {
            return false;
        }
        let (svc, dest, gen) = (c.svc, c.dest, c.gen);
        let key = match (x.kind, x.fnat) {
            (K::Passive, _) => ExpKey::Passive(x.client, x.vip, x.port),
            (K::PassiveAny, _) => ExpKey::PassiveAny(x.client, x.vip),
            (K::Active, Some((la, _))) => ExpKey::Active(x.rs, la, x.port),
            (K::Active, None) => ExpKey::Active(x.rs, x.client, x.port),
            (K::DrActive, _) => ExpKey::DrActive(x.client, x.port, x.vip),
        };
        // No longer than this node's own pinholes live: a peer configured with a longer
        // pinhole_timeout (or a forged entry) would otherwise keep a port open here for as
        // long as it liked. Cut to it, counted.
        let ftp = self.snap.services.get(svc as usize).and_then(|s| s.ftp.as_ref());
        let limit = ftp.map_or(ferrovs_cfg::FtpOptions::default().pinhole_timeout, |f| f.pinhole_timeout);
        let capped = x.timeout_s > limit;
        let expires = self.now + u64::from(x.timeout_s.min(limit)) * 1_000_000_000;
        // Full NAT active: the real server will connect to the sender's local address at a
        // port the sender reserved; reserved here too until used or expired (both sides must
        // agree it is full NAT).
        let fnat_service = self
            .snap
            .services
            .get(svc as usize)
            .and_then(|s| s.dests.get(dest as usize))
            .is_some_and(|d| d.forward == Forward::Fnat);
        if fnat_service != x.fnat.is_some() && x.kind == K::Active {
            return false;
        }
        // One expectation per key (DR passive ones excepted: they queue). What this node holds
        // under the key from the cluster is superseded: the sender found the key free, so the
        // data connection of an earlier copy came already (on another node) or never will; an
        // earlier copy left first in line would take the new session's data connection. One of
        // a live control connection this node carries itself is a clash between two nodes'
        // sessions: kept, and the peer's refused (counted in `sync_skipped`).
        if !matches!(key, ExpKey::PassiveAny(..)) {
            let (flows, now) = (&self.flows, self.now);
            let mut clash = false;
            self.expect.retain_key(&key, |v| {
                let carried = v.expires > now
                    && flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen && c.flags & F_SYNCED == 0);
                let same = v.parent == parent && v.parent_gen == gen;
                clash |= carried && !same;
                carried && !same
            });
            if clash {
                return false;
            }
        }
        if let Some((la, _)) = x.fnat {
            match self.reserved.iter().position(|&(a, p, _)| a == la && p == x.port) {
                Some(k) => self.reserved[k].2 = expires, // sent again: the same reservation
                None => {
                    if self.reserved.len() >= super::ftp::MAX_RESERVED || !self.lports.reserve(la, proto, x.port) {
                        return false;
                    }
                    self.reserved.push((la, x.port, expires));
                }
            }
        }
        let per_session = self
            .snap
            .services
            .get(svc as usize)
            .and_then(|s| s.ftp.as_ref())
            .map_or(4, |f| usize::from(f.max_expectations));
        let val = ExpVal {
            svc,
            dest,
            rs: x.rs,
            rport: (x.rport != 0).then_some(x.rport),
            vip: x.vip,
            parent,
            parent_gen: gen,
            expires,
            client: if x.fnat.is_some() { x.client } else { Addr::default() },
            cport: x.fnat.map_or(0, |f| f.1),
        };
        self.expect.insert(key, val, per_session);
        // (What the insertion replaced or evicted, and superseded copies.)
        self.release_unreserved();
        if capped {
            bump(&self.counters.sync_capped, 1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::sync::{Batcher, ConnSync, ExpectKind, ExpectSync, SeqSync, SyncEntry};
    use crate::tools::replay::MemEngine;
    use crate::tools::testpkt::{tcp4, udp4, with_macs};
    use crate::wire::parse::{v4_to_addr, TCP_SYN};

    const S: u64 = 1_000_000_000;
    const CLIENT: [u8; 4] = [10, 0, 1, 2];
    const VIP: [u8; 4] = [10, 0, 1, 100];
    const RS1: [u8; 4] = [10, 0, 2, 2];
    /// A neighbour on the inside that is no real server of any service.
    const OTHER: [u8; 4] = [10, 0, 2, 3];

    /// Node 2 of a cluster with a NAT FTP service on VIP:21, a NAT web service on VIP:8080
    /// and a NAT DNS service (UDP) on VIP:53, over RS1.
    fn node() -> MemEngine {
        MemEngine::new(ferrovs_cfg::Config::from_str(NODE, "sync-test.toml").expect("parses"), 1)
    }

    const NODE: &str = r#"
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
address = "10.0.2.3"
mac = "02:00:00:00:02:03"

[[neighbor]]
address = "10.0.1.2"
mac = "02:00:00:00:01:02"

[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21]
scheduler = "mh"
forward = "nat"
syn_proxy = "off"
ftp = true
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web"
vip = "10.0.1.100"
ports = [8080]
scheduler = "mh"
forward = "nat"
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "dns"
vip = "10.0.1.100"
ports = [53]
protocol = "udp"
scheduler = "mh"
forward = "nat"
[[service.real_server]]
address = "10.0.2.2"

[cluster]
node_id = 2
sync_address = "10.9.0.2"
peers = ["10.9.0.250"]
"#;

    fn deliver(e: &mut MemEngine, es: &[SyncEntry], now: u64) {
        let m = Batcher::new(1, 1000).encode(es, now).remove(0);
        e.deliver_sync(&m, now).unwrap();
    }

    /// A NAT web connection CLIENT:40000 -> VIP:8080 -> RS1:8080 (no FTP control connection).
    fn web() -> SyncEntry {
        match control() {
            SyncEntry::Conn(c) => SyncEntry::Conn(ConnSync { vport: 8080, rport: 8080, ..c }),
            _ => unreachable!(),
        }
    }

    fn control() -> SyncEntry {
        SyncEntry::Conn(ConnSync {
            proto: 6,
            state: 1,
            fwd: 0,
            data: false,
            client: v4_to_addr(CLIENT),
            cport: 40000,
            vip: v4_to_addr(VIP),
            vport: 21,
            rs: v4_to_addr(RS1),
            rport: 21,
            timeout_s: 900,
            proxy_delta: None,
            fnat: None,
        })
    }

    fn passive(port: u16, rs: [u8; 4]) -> SyncEntry {
        SyncEntry::Expect(ExpectSync {
            kind: ExpectKind::Passive,
            port,
            rport: 0,
            ctl_cport: 40000,
            ctl_vport: 21,
            client: v4_to_addr(CLIENT),
            vip: v4_to_addr(VIP),
            rs: v4_to_addr(rs),
            timeout_s: 60,
            fnat: None,
        })
    }

    /// The client's SYN to VIP:`port`: the destination addresses of what went out.
    fn data_syn(e: &mut MemEngine, port: u16, now: u64) -> Vec<[u8; 4]> {
        let f = with_macs(tcp4(CLIENT, 40100, VIP, port, TCP_SYN, 1, 0, b""), [2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1]);
        e.inject(0, &f, now).iter().map(|(_, o)| o[30..34].try_into().unwrap()).collect()
    }

    #[test]
    fn a_synced_expectation_must_name_its_control_connections_real_server() {
        let mut e = node();
        deliver(&mut e, &[control(), passive(30001, RS1), passive(30002, OTHER)], S);
        // The control connection and the expectation towards its server: installed; the one
        // naming an address that is not the session's server (nor any real server here):
        // refused and counted.
        assert!(!data_syn(&mut e, 30002, 2 * S).contains(&OTHER), "a client's data connection sent to {OTHER:?}");
        assert_eq!(data_syn(&mut e, 30001, 2 * S), vec![RS1]);
        let c = e.counters();
        assert_eq!((c.sync_installed, c.sync_skipped), (2, 1), "{c:?}");
    }

    /// A peer's entry asking for ten days (a peer with longer timeouts, or a forged message)
    /// lives here no longer than this node's timeout for its state (ESTABLISHED: 900 s,
    /// UDP: 300 s), installed or updated.
    #[test]
    fn a_synced_connection_lives_no_longer_than_the_local_state_timeout() {
        let mut e = node();
        let long = |x: SyncEntry| match x {
            SyncEntry::Conn(c) => SyncEntry::Conn(ConnSync { timeout_s: 864_000, ..c }),
            x => x,
        };
        let udp = SyncEntry::Conn(ConnSync {
            proto: 17,
            state: 11,
            vport: 53,
            rport: 53,
            ..match web() {
                SyncEntry::Conn(c) => c,
                _ => unreachable!(),
            }
        });
        // (protocol, seconds left), within a tick of the timeout.
        let left = |e: &MemEngine| -> Vec<(String, bool)> {
            let mut v: Vec<_> = e.workers[0]
                .core()
                .list_conns()
                .into_iter()
                .map(|c| {
                    let t = if c.proto == "TCP" { 900 } else { 300 };
                    (c.proto, (t - 2..=t).contains(&c.expires_in_s))
                })
                .collect();
            v.sort();
            v
        };
        let capped = vec![("TCP".to_string(), true), ("UDP".to_string(), true)];
        deliver(&mut e, &[long(web()), long(udp)], S);
        assert_eq!(left(&e), capped, "installed");
        // An update of known entries: the same cap.
        deliver(&mut e, &[web(), udp], 2 * S);
        deliver(&mut e, &[long(web()), long(udp)], 3 * S);
        assert_eq!(left(&e), capped, "updated");
    }

    #[test]
    fn a_synced_udp_connection_takes_no_syn_proxy_offset() {
        let mut e = node();
        // A UDP connection entry carrying the SYN-proxy flag (only TCP has one).
        let udp = SyncEntry::Conn(ConnSync {
            proto: 17,
            state: 11,
            fwd: 0,
            data: false,
            client: v4_to_addr(CLIENT),
            cport: 40000,
            vip: v4_to_addr(VIP),
            vport: 53,
            rs: v4_to_addr(RS1),
            rport: 53,
            timeout_s: 300,
            proxy_delta: Some(0x0100_0000),
            fnat: None,
        });
        let m = Batcher::new(1, 1000).encode(&[udp], S).remove(0);
        let _ = e.deliver_sync(&m, S);
        // The real server's reply goes back to the client with its UDP header and payload
        // as they were (NAT rewrites addresses and the checksum only).
        let payload = [0x5au8; 32];
        let f = with_macs(udp4(RS1, 53, CLIENT, 40000, &payload), [2, 0, 0, 0, 2, 2], [2, 0, 0, 0, 2, 1]);
        for (_, o) in e.inject(1, &f, 2 * S) {
            assert_eq!(&o[38..40], &f[38..40], "UDP length rewritten");
            assert_eq!(&o[42..], &payload[..], "UDP payload rewritten");
        }
    }

    #[test]
    fn an_entry_naming_another_connections_reply_does_not_touch_it() {
        let mut e = node();
        deliver(&mut e, &[control()], S);
        // An entry whose client, VIP and ports are the backup's reply direction (RS1:21 ->
        // CLIENT:40000), closing at once.
        let reply = SyncEntry::Conn(ConnSync {
            proto: 6,
            state: 6,
            fwd: 0,
            data: false,
            client: v4_to_addr(RS1),
            cport: 21,
            vip: v4_to_addr(CLIENT),
            vport: 40000,
            rs: v4_to_addr(RS1),
            rport: 21,
            timeout_s: 0,
            proxy_delta: None,
            fnat: None,
        });
        deliver(&mut e, &[reply], S);
        // The backup still carries the server's replies to the client.
        let f = with_macs(
            tcp4(RS1, 21, CLIENT, 40000, crate::wire::parse::TCP_ACK, 1, 2, b""),
            [2, 0, 0, 0, 2, 2],
            [2, 0, 0, 0, 2, 1],
        );
        let out = e.inject(1, &f, 3 * S);
        assert_eq!(out.len(), 1, "{:?}", e.counters());
        assert_eq!(&out[0].1[26..30], &VIP[..]);
        // The entry was refused, counted.
        let c = e.counters();
        assert_eq!((c.sync_installed, c.sync_skipped), (1, 1), "{c:?}");
    }

    #[test]
    fn a_gateway_translation_for_a_connection_that_is_no_ftp_control_connection_is_refused() {
        let mut e = node();
        let web = web();
        let shift = ferrovs_ftp_alg::SeqShift { at: 0, before: 7, after: 7 };
        let seq = SyncEntry::Seq(SeqSync {
            client: v4_to_addr(CLIENT),
            cport: 40000,
            vip: v4_to_addr(VIP),
            vport: 8080,
            lport: None,
            orig: shift,
            reply: shift,
        });
        deliver(&mut e, &[web, seq], S);
        // The client's segment reaches the server with its own sequence number and payload.
        let f = with_macs(
            tcp4(CLIENT, 40000, VIP, 8080, crate::wire::parse::TCP_ACK, 1000, 1, b"PORT 1,2,3,4,5,6\r\n"),
            [2, 0, 0, 0, 1, 2],
            [2, 0, 0, 0, 1, 1],
        );
        let out = e.inject(0, &f, 2 * S);
        assert_eq!(out.len(), 1, "{:?}", e.counters());
        assert_eq!(&out[0].1[38..42], &1000u32.to_be_bytes(), "sequence number shifted");
        assert_eq!(&out[0].1[54..], &f[54..], "payload rewritten");
        let c = e.counters();
        assert_eq!((c.sync_installed, c.sync_skipped), (1, 1), "{c:?}");
    }

    #[test]
    fn a_synced_expectation_needs_an_ftp_control_connection() {
        let mut e = node();
        let web = web();
        // A passive expectation of the web connection: VIP:30003 -> RS1:22.
        let mut x = passive(30003, RS1);
        if let SyncEntry::Expect(x) = &mut x {
            (x.ctl_vport, x.rport) = (8080, 22);
        }
        deliver(&mut e, &[web, x], S);
        assert!(!data_syn(&mut e, 30003, 2 * S).contains(&RS1), "a pinhole to RS1:22 through a web connection");
        let c = e.counters();
        assert_eq!((c.sync_installed, c.sync_skipped), (1, 1), "{c:?}");
    }

    /// A peer's half-open connections are not this worker's: installing one in SYN_RECV
    /// counts nothing, so its removal must not take one off this worker's half-open count
    /// either, which decides when `syn_proxy = "auto"` engages. Before, every backup in
    /// SYN_RECV that went (a peer under the same SYN flood syncs thousands) lowered the count
    /// of this worker's own half-open connections, and the proxy stayed off.
    #[test]
    fn a_peers_half_open_connections_leave_the_syn_proxy_threshold_alone() {
        let t = NODE.replace("flow_table_size = 4096", "flow_table_size = 4096\nsyn_proxy_threshold = 1");
        let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&t, "sync-test.toml").expect("parses"), 1);
        let half_open = |cport| match web() {
            SyncEntry::Conn(c) => SyncEntry::Conn(ConnSync { state: 3, cport, timeout_s: 60, ..c }),
            _ => unreachable!(),
        };
        deliver(&mut e, &[half_open(40000), half_open(40001)], S);
        let syn = |e: &mut MemEngine, sport: u16| -> [u8; 4] {
            let f =
                with_macs(tcp4(CLIENT, sport, VIP, 8080, TCP_SYN, 1, 0, b""), [2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1]);
            let out = e.inject(0, &f, 2 * S);
            assert_eq!(out.len(), 1);
            out[0].1[30..34].try_into().unwrap()
        };
        // Below the threshold: this worker's first half-open connection goes to the server.
        assert_eq!(syn(&mut e, 50000), RS1);
        // The peer's half-open connections go (their owner closed them).
        let gone = |cport| SyncEntry::Delete {
            proto: 6,
            client: v4_to_addr(CLIENT),
            cport,
            vip: v4_to_addr(VIP),
            vport: 8080,
            lport: None,
        };
        deliver(&mut e, &[gone(40000), gone(40001)], 2 * S);
        assert_eq!(e.counters().sync_installed, 4);
        // One half-open connection here, at the threshold: the next SYN gets a cookie.
        assert_eq!(syn(&mut e, 50001), CLIENT, "answered by the SYN proxy");
    }

    #[test]
    fn a_synced_expectation_lives_no_longer_than_the_local_pinhole_timeout() {
        let mut e = node();
        // A peer's passive expectation asking for a day (pinhole_timeout is 60 s here).
        let mut x = passive(30001, RS1);
        if let SyncEntry::Expect(x) = &mut x {
            x.timeout_s = 86_400;
        }
        deliver(&mut e, &[control(), x], S);
        // Past the local pinhole timeout the data connection finds no pinhole.
        assert!(!data_syn(&mut e, 30001, 62 * S).contains(&RS1), "a peer's pinhole outlived pinhole_timeout");
        let c = e.counters();
        assert_eq!((c.sync_installed, c.sync_capped), (2, 1), "{c:?}");
        // One within the limit is installed as sent, not counted as capped.
        let mut e = node();
        deliver(&mut e, &[control(), passive(30001, RS1)], S);
        assert_eq!(e.counters().sync_capped, 0);
        assert_eq!(data_syn(&mut e, 30001, 60 * S), vec![RS1]);
    }

    #[test]
    fn an_entry_for_a_connection_this_node_carries_is_not_counted_installed() {
        let mut e = node();
        // The client's connection to the web service, carried here.
        let f = with_macs(tcp4(CLIENT, 40000, VIP, 8080, TCP_SYN, 1, 0, b""), [2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1]);
        assert_eq!(e.inject(0, &f, S).len(), 1, "{:?}", e.counters());
        // A peer's entry for the same connection (ECMP moved it, or both nodes saw it): this
        // node keeps its own state, and says so.
        deliver(&mut e, &[web()], 2 * S);
        let c = e.counters();
        assert_eq!((c.sync_installed, c.sync_skipped, c.sync_carried), (0, 0, 1), "{c:?}");
    }
}
