//! Cluster, full NAT: one node handles an FTP control session. After a node fails, the routers
//! spread the client side of its connections (ECMP on the VIP) and the real-server side (ECMP on
//! its local address) over the survivors independently; the FTP gateway must see both sides of a
//! control connection to rewrite a 227 or a PORT and to create the expectation. So every node
//! agrees on one handler per local address: its owner while the owner lives, otherwise the
//! designated survivor, the live node with the highest rendezvous (HRW) hash of (owner,
//! candidate) over the configured nodes. A node that receives a packet of an FTP control
//! connection handled elsewhere sends it there unchanged but for the Ethernet header (the
//! handler's MAC on the shared segment, resolved by ARP/ND from the address the handler's sync
//! datagrams come from). A packet whose source MAC is a peer node's was redirected already and is
//! handled where it arrived (`redirect_loop`): at most one hop, whatever the nodes' views.
//!
//! Liveness comes from the sync datagrams (each node sends one at least every
//! [`HEARTBEAT_MS`]): a peer not heard for [`DEAD_AFTER_MS`] is dead.

use super::*;
use crate::wire::view::EthAddrs;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The sync thread sends an empty datagram when it sent nothing for this long.
pub const HEARTBEAT_MS: u64 = 200;
/// A peer not heard from for this long is dead (BFD's 300 ms plus the route's move, roughly).
pub const DEAD_AFTER_MS: u64 = 1000;

/// When each peer node was last heard from and from which address (the sync thread writes, the
/// workers read).
pub struct Liveness {
    base: Instant,
    /// Per node id: milliseconds since `base` plus one when last heard; 0: never.
    seen: Vec<AtomicU64>,
    /// Per node id: the address its datagrams come from (high and low halves).
    addr: Vec<[AtomicU64; 2]>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            base: Instant::now(),
            seen: (0..256).map(|_| AtomicU64::new(0)).collect(),
            addr: (0..256).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect(),
        }
    }
}

impl Liveness {
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }
    /// Node `node` was heard from `from` at `now_ms`.
    pub fn heard(&self, node: u8, from: Addr, now_ms: u64) {
        let a = &self.addr[node as usize];
        a[0].store((from >> 64) as u64, Relaxed);
        a[1].store(from as u64, Relaxed);
        self.seen[node as usize].store(now_ms + 1, Relaxed);
    }
    pub fn alive(&self, node: u8, now_ms: u64) -> bool {
        let s = self.seen[node as usize].load(Relaxed);
        s != 0 && (now_ms + 1).saturating_sub(s) < DEAD_AFTER_MS
    }
    /// The address node `node` was last heard from.
    pub fn addr(&self, node: u8) -> Option<Addr> {
        if self.seen[node as usize].load(Relaxed) == 0 {
            return None;
        }
        let a = &self.addr[node as usize];
        Some(((a[0].load(Relaxed) as u128) << 64) | a[1].load(Relaxed) as u128)
    }
}

/// The rendezvous weight of `candidate` for the sessions of failed node `owner`.
fn hrw(owner: u8, candidate: u8) -> u64 {
    let mut x = ((owner as u64) << 8 | candidate as u64) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The node that handles the sessions on `owner`'s local addresses: `owner` while it lives,
/// else the live node among `nodes` with the highest [`hrw`] weight (None: none lives).
pub fn handler(owner: u8, nodes: impl Iterator<Item = u8>, live: impl Fn(u8) -> bool) -> Option<u8> {
    if live(owner) {
        return Some(owner);
    }
    nodes.filter(|n| *n != owner && live(*n)).max_by_key(|n| (hrw(owner, *n), *n))
}

impl<Q: BufAlloc> Worker<Q> {
    /// Full NAT in a cluster: `Some` when the packet of FTP control connection `idx` belongs to
    /// another node (sent there, or parked while its MAC resolves), `None` to handle it here.
    #[inline(never)]
    pub(super) fn alg_redirect(&mut self, idx: u32, pkt: &mut Q::Buf) -> Option<Next> {
        let c = self.flows.get(idx);
        if c.fwd != Forward::Fnat {
            return None;
        }
        let cl = self.snap.config.cluster.as_ref()?;
        let owner = cl.owner_of_local(parse::addr_to_ip(self.flows.laddr_of(c)))?;
        let me = cl.node_id;
        let live = &*self.liveness;
        let now = live.now_ms();
        let target = handler(owner, cl.nodes.iter().map(|n| n.id), |n| n == me || live.alive(n, now))?;
        if target == me {
            return None;
        }
        let addr = live.addr(target)?;
        let iface = (0..self.snap.ifaces.len()).find(|i| self.snap.on_link(*i, addr))?;
        // Redirected by a peer already: never a second hop.
        let src: [u8; 6] = pkt.data().get(6..12)?.try_into().ok()?;
        let peers: Vec<Addr> = cl.nodes.iter().filter(|n| n.id != me).filter_map(|n| live.addr(n.id)).collect();
        for a in peers {
            match self.neigh.resolve(a) {
                Some(m) if m == src => {
                    bump(&self.counters.redirect_loop, 1);
                    return None;
                }
                Some(_) => {}
                // Learn every peer's MAC, so that their redirects are recognised.
                None => {
                    if let Some(i) = (0..self.snap.ifaces.len()).find(|i| self.snap.on_link(*i, a)) {
                        self.solicit(i, a);
                    }
                }
            }
        }
        bump(&self.counters.redirected, 1);
        let src_mac = self.if_macs[iface];
        let Ok(mut eth) = EthAddrs::at_mut(pkt.data_mut(), 0) else {
            return Some(Next::Drop(DropReason::Malformed));
        };
        eth.set_src(src_mac);
        match self.neigh.resolve(addr) {
            Some(mac) => {
                eth.set_dst(mac);
                Some(Next::Tx(iface))
            }
            None => {
                self.solicit(iface, addr);
                Some(Next::Park(iface, addr))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_handles_its_sessions_while_it_lives() {
        assert_eq!(handler(2, 1..=4, |_| true), Some(2));
    }

    #[test]
    fn every_view_with_the_same_live_nodes_designates_the_same_survivor() {
        for owner in 1..=8u8 {
            let dead = [owner, owner % 8 + 1];
            let live = |n: u8| !dead.contains(&n);
            let h = handler(owner, 1..=8, live).unwrap();
            assert!(live(h));
            // The order the nodes are listed in does not matter.
            assert_eq!(handler(owner, (1..=8).rev(), live), Some(h));
        }
        assert_eq!(handler(1, 1..=3, |_| false), None);
    }

    #[test]
    fn a_failed_owners_sessions_move_to_several_survivors_over_owners() {
        // Rendezvous hashing: different failed owners designate different survivors.
        let hs: std::collections::HashSet<u8> = (1..=16u8).filter_map(|o| handler(o, 1..=16, |n| n != o)).collect();
        assert!(hs.len() > 4, "{hs:?}");
        // Losing a survivor other than the designated one keeps the designation.
        let h = handler(1, 1..=8, |n| n != 1).unwrap();
        let other = (2..=8).find(|n| *n != h).unwrap();
        assert_eq!(handler(1, 1..=8, |n| n != 1 && n != other), Some(h));
    }

    #[test]
    fn a_peer_is_alive_until_not_heard_for_the_timeout() {
        let l = Liveness::default();
        assert!(!l.alive(3, 5) && l.addr(3).is_none());
        l.heard(3, 0x0a1e_000d, 100);
        assert!(l.alive(3, 100) && l.alive(3, 100 + DEAD_AFTER_MS - 1));
        assert!(!l.alive(3, 100 + DEAD_AFTER_MS));
        assert_eq!(l.addr(3), Some(0x0a1e_000d));
        // A clock read before the record (another thread) is not "dead".
        assert!(l.alive(3, 50));
    }
}
