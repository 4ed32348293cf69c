//! Full NAT (`forward = "fnat"`): local port allocation and the two-sided
//! rewrite.
//!
//! A full-NAT connection client:cport -> VIP:vport leaves the balancer as
//! LADDR:lport -> RS:rport, so the real server answers LADDR:lport by
//! ordinary routing and needs no route to the client. The reply
//! RS:rport -> LADDR:lport is found by that tuple and becomes
//! VIP:vport -> client:cport.
//!
//! Ownership: a connection lives on the worker that owns its client
//! ([`crate::pipeline::snapshot::owner_of`]), and that worker picks the local port
//! from its own share of `[engine] local_port_range`
//! ([`crate::pipeline::snapshot::lport_share`]), so the reply, classified by its
//! destination port ([`crate::pipeline::snapshot::lport_owner`]), reaches the same
//! worker (handed off through the ring when RSS delivered it elsewhere).
//! DPVS does the same with per-lcore port masks and flow director rules.
//!
//! Each worker keeps one bitmap of its share per (local address, protocol):
//! allocation continues after the last allocated port (a port is not
//! reused at once, which keeps a real server's TIME_WAIT of the previous
//! user out of the way, as Linux's ephemeral port choice does), release
//! clears the bit. The daemon's first search on an address starts at a random
//! point of the first half of the share ([`LportPools::randomized`]), so a
//! restarted node does not hand out again, first thing, the ports its previous
//! run used: cluster peers may still carry those connections (adopted at the
//! failover, or backups in TIME_WAIT), and real servers may hold their TIME_WAIT.
//! When a local address has no free port the next one of the service is tried;
//! when none has, the packet is dropped and counted (`fnat_ports_exhausted`).

use crate::pipeline::counters::DropReason;
use crate::pipeline::nat::{rewrite_addrs, rewrite_ports};
use crate::wire::parse::{Addr, Parsed};
use ferrovs_cfg::PortRange;
use hashbrown::{HashMap, HashSet};

/// Free/used ports of one (local address, protocol) in one worker's share.
struct Pool {
    /// Bit `i`: port `share.lo + i` is in use.
    used: Vec<u64>,
    free: u32,
    /// Where the next search starts (just past the last allocation).
    next: u32,
    /// Searched from a peer's slot ([`LportPools::take_foreign`]).
    foreign: bool,
}

/// A worker's local ports on every local address it has used.
pub struct LportPools {
    share: PortRange,
    pools: HashMap<(Addr, u8), Pool>,
    /// Ports held by live connections when the share changed (a reload with
    /// another `local_port_range`): kept out of the new pools.
    carried: HashSet<(Addr, u8, u16)>,
    /// Earlier ranges whose connections may still live, each with this worker's share of it
    /// then: a port of such a range outside that share was another worker's, which may
    /// still hold it on any local address, so it is not handed out here.
    fences: Vec<(PortRange, PortRange)>,
    /// Round-robin position over each service's local addresses (by service index): a
    /// service's own, so connections of other services in between do not skew its turn (one
    /// position for all would give, with two services alternating, every connection of one of
    /// them the same address).
    turns: Vec<usize>,
    /// Where the first search on an address starts, as a fraction (of 2^64) of the first
    /// half of the share: 0 from its start ([`LportPools::new`]).
    start: u64,
}

impl LportPools {
    pub fn new(share: PortRange) -> Self {
        LportPools {
            share,
            pools: HashMap::new(),
            carried: HashSet::new(),
            fences: Vec::new(),
            turns: Vec::new(),
            start: 0,
        }
    }

    /// [`LportPools::new`] whose first search on each address starts at a point of the
    /// first half of the share chosen by `seed` (the daemon: a random one). The second half
    /// stays where peers search ([`LportPools::take_foreign`]).
    pub fn randomized(share: PortRange, seed: u64) -> Self {
        LportPools { start: seed, ..Self::new(share) }
    }

    pub fn share(&self) -> PortRange {
        self.share
    }

    /// A new share (reload with another port range): pools start over, the
    /// ports of live connections (`in_use`) stay taken, and so do the ports of each earlier
    /// range in `fences` (the range, this worker's share of it) outside this worker's share
    /// of it: other workers' connections may hold them.
    pub fn reshare(
        &mut self,
        share: PortRange,
        in_use: impl Iterator<Item = (Addr, u8, u16)>,
        fences: Vec<(PortRange, PortRange)>,
    ) {
        self.share = share;
        self.pools.clear();
        self.carried = in_use.collect();
        self.fences = fences;
    }

    /// Forget everything (no connection holds a port).
    pub fn clear(&mut self) {
        self.pools.clear();
        self.carried.clear();
        self.fences.clear();
        self.turns.clear();
    }

    fn pool(&mut self, a: Addr, proto: u8) -> &mut Pool {
        let share = self.share;
        let (carried, fences) = (&self.carried, &self.fences);
        let start = self.start;
        self.pools.entry((a, proto)).or_insert_with(|| {
            let n = share.hi as u32 - share.lo as u32 + 1;
            // A different point per address and protocol (a multiplicative mix of the seed).
            let mix = (start ^ (a as u64) ^ ((a >> 64) as u64) ^ proto as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let next = if start == 0 { 0 } else { (((mix >> 32) * u64::from(n / 2)) >> 32) as u32 };
            let mut p = Pool { used: vec![0; n.div_ceil(64) as usize], free: n, next, foreign: false };
            // Bits past the share are permanently "used".
            for i in n..(p.used.len() as u32 * 64) {
                p.used[(i / 64) as usize] |= 1 << (i % 64);
            }
            if !carried.is_empty() {
                for &(ca, cp, port) in carried.iter() {
                    if ca == a && cp == proto && share.contains(port) {
                        let i = (port - share.lo) as u32;
                        p.used[(i / 64) as usize] |= 1 << (i % 64);
                        p.free -= 1;
                    }
                }
            }
            for &(range, own) in fences {
                for port in share.lo..=share.hi {
                    let i = (port - share.lo) as u32;
                    let bit = 1u64 << (i % 64);
                    if range.contains(port) && !own.contains(port) && p.used[(i / 64) as usize] & bit == 0 {
                        p.used[(i / 64) as usize] |= bit;
                        p.free -= 1;
                    }
                }
            }
            p
        })
    }

    /// A free port on `a`, if any (FTP through full NAT reserves one on the control
    /// connection's own local address for an active data connection).
    pub fn take_on(&mut self, a: Addr, proto: u8) -> Option<u16> {
        self.take_from(a, proto, None)
    }

    /// [`LportPools::take_on`] on a cluster peer's local address `a` (an FTP data connection
    /// of a control connection the peer opened): the first search starts `slot`/256 of the way
    /// into the share, far from where the owner allocates (from the start, in order) and from
    /// other nodes' slots, so two nodes do not pick the same port before their syncs cross.
    pub fn take_foreign(&mut self, a: Addr, proto: u8, slot: u8) -> Option<u16> {
        self.take_from(a, proto, Some(slot))
    }

    fn take_from(&mut self, a: Addr, proto: u8, slot: Option<u8>) -> Option<u16> {
        let lo = self.share.lo;
        let n = self.share.hi as u32 - self.share.lo as u32 + 1;
        let p = self.pool(a, proto);
        if p.free == 0 {
            return None;
        }
        if let Some(k) = slot {
            if !p.foreign {
                p.foreign = true;
                // Half way, plus this node's slot of the other half.
                p.next = n / 2 + (n / 2) * u32::from(k) / 256;
            }
        }
        let words = p.used.len();
        let start = p.next as usize;
        // Scan words from `next`'s word (wrapping once); the first word is
        // looked at from `next`'s bit on, then again whole at the end.
        for k in 0..=words {
            let wi = (start / 64 + k) % words;
            let mut w = p.used[wi];
            if k == 0 {
                w |= (1u64 << (start % 64)) - 1;
            }
            if w != u64::MAX {
                let b = (!w).trailing_zeros() as usize;
                let i = wi * 64 + b;
                p.used[wi] |= 1 << b;
                p.free -= 1;
                p.next = ((i + 1) % (words * 64)) as u32;
                return Some(lo + i as u16);
            }
        }
        None
    }

    /// A local address and port for a new connection of service `svc` (its index) with
    /// local addresses `locals`: round robin over them, a full address
    /// passes its turn to the next. `None`: every one is full.
    pub fn alloc(&mut self, svc: usize, locals: &[Addr], proto: u8) -> Option<(Addr, u16)> {
        let n = locals.len();
        if n == 0 {
            return None;
        }
        if self.turns.len() <= svc {
            self.turns.resize(svc + 1, 0);
        }
        let turn = &mut self.turns[svc];
        let start = *turn % n;
        *turn = turn.wrapping_add(1);
        for k in 0..n {
            let a = locals[(start + k) % n];
            if let Some(port) = self.take_on(a, proto) {
                return Some((a, port));
            }
        }
        None
    }

    /// Mark `port` on `a` used without allocating it (a full-NAT connection a cluster peer
    /// synced: its local port must not be handed out here). False if it is already in use.
    /// A port outside this worker's share is never allocated here: nothing to mark.
    pub fn reserve(&mut self, a: Addr, proto: u8, port: u16) -> bool {
        if !self.share.contains(port) {
            return true;
        }
        let lo = self.share.lo;
        let p = self.pool(a, proto);
        let i = (port - lo) as usize;
        let bit = 1u64 << (i % 64);
        if p.used[i / 64] & bit != 0 {
            return false;
        }
        p.used[i / 64] |= bit;
        p.free -= 1;
        true
    }

    /// Give back `port` on `a` (a connection ended).
    pub fn release(&mut self, a: Addr, proto: u8, port: u16) {
        if !self.carried.is_empty() {
            self.carried.remove(&(a, proto, port));
        }
        if !self.share.contains(port) {
            return;
        }
        let lo = self.share.lo;
        let Some(p) = self.pools.get_mut(&(a, proto)) else { return };
        let i = (port - lo) as usize;
        let bit = 1u64 << (i % 64);
        if p.used[i / 64] & bit != 0 {
            p.used[i / 64] &= !bit;
            p.free += 1;
        }
    }

    /// Free ports on `a` (tests, statistics).
    pub fn free_on(&mut self, a: Addr, proto: u8) -> u32 {
        self.pool(a, proto).free
    }
}

/// The full-NAT rewrite of one packet: source and destination address and
/// port, TTL / hop limit decremented; `l3d`/`l4d` are the connection's
/// precomputed checksum deltas (RFC 1624) for this direction, covering all
/// four fields (and the TTL for IPv4). Errors as [`crate::pipeline::nat::rewrite_nat`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn rewrite_fnat(
    d: &mut [u8],
    p: &Parsed,
    src: Addr,
    sport: u16,
    dst: Addr,
    dport: u16,
    l3d: u16,
    l4d: u16,
) -> Result<(), DropReason> {
    rewrite_addrs(d, p.l3, p.v6, Some(src), Some(dst), l3d)?;
    rewrite_ports(d, p, Some(sport), Some(dport), l4d).unwrap_or(Err(DropReason::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::{v4_to_addr, PROTO_TCP, PROTO_UDP};

    const R: PortRange = PortRange { lo: 5000, hi: 5099 };

    #[test]
    fn allocates_every_port_once_then_moves_to_the_next_address() {
        let (a, b) = (v4_to_addr([10, 0, 2, 200]), v4_to_addr([10, 0, 2, 201]));
        let mut p = LportPools::new(R);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let (la, port) = p.alloc(0, &[a, b], PROTO_TCP).expect("room");
            assert!(R.contains(port));
            assert!(seen.insert((la, port)), "{la} {port} twice");
        }
        assert_eq!(p.alloc(0, &[a, b], PROTO_TCP), None, "both full");
        assert!(p.alloc(0, &[a, b], PROTO_UDP).is_some(), "UDP has its own ports");
        // One port back on b: the next allocation, whatever its turn, finds it.
        p.release(b, PROTO_TCP, 5042);
        assert_eq!(p.alloc(0, &[a, b], PROTO_TCP), Some((b, 5042)));
        p.release(a, PROTO_TCP, 5001);
        p.release(a, PROTO_TCP, 5001);
        assert_eq!(p.free_on(a, PROTO_TCP), 1, "a double release counts once");
        p.release(a, PROTO_TCP, 80);
        assert_eq!(p.free_on(a, PROTO_TCP), 1, "a port outside the share is ignored");
    }

    /// A restarted daemon's first ports: a random point of the first half of the share,
    /// another per address; every port is still handed out once; seed 0 starts at the start.
    #[test]
    fn randomized_start_lies_in_the_first_half_and_still_covers_the_share() {
        let (a, b) = (v4_to_addr([10, 0, 2, 200]), v4_to_addr([10, 0, 2, 201]));
        assert_eq!(LportPools::randomized(R, 0).take_on(a, PROTO_TCP), Some(5000));
        let mut firsts = HashSet::new();
        for seed in 1..=64u64 {
            let mut p = LportPools::randomized(R, seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let (fa, fb) = (p.take_on(a, PROTO_TCP).unwrap(), p.take_on(b, PROTO_TCP).unwrap());
            assert!((5000..5050).contains(&fa) && (5000..5050).contains(&fb), "{fa} {fb}");
            firsts.insert(fa);
            let mut seen: HashSet<u16> = [fa].into_iter().collect();
            while let Some(port) = p.take_on(a, PROTO_TCP) {
                assert!(seen.insert(port), "{port} twice");
            }
            assert_eq!(seen.len(), 100);
        }
        assert!(firsts.len() > 20, "seeds spread the start: {firsts:?}");
    }

    #[test]
    fn a_released_port_is_not_reused_at_once() {
        let a = v4_to_addr([10, 0, 2, 200]);
        let mut p = LportPools::new(R);
        let (_, first) = p.alloc(0, &[a], PROTO_TCP).unwrap();
        p.release(a, PROTO_TCP, first);
        let (_, second) = p.alloc(0, &[a], PROTO_TCP).unwrap();
        assert_ne!(first, second);
        // After wrapping around the share the released port comes back.
        let mut got = Vec::new();
        while let Some((_, x)) = p.alloc(0, &[a], PROTO_TCP) {
            got.push(x);
        }
        assert!(got.contains(&first));
        assert_eq!(got.len(), 99);
    }

    #[test]
    fn reserved_ports_are_never_handed_out() {
        let a = v4_to_addr([10, 0, 2, 200]);
        let mut p = LportPools::new(R);
        assert!(p.reserve(a, PROTO_TCP, 5000));
        assert!(p.reserve(a, PROTO_TCP, 5050));
        assert!(!p.reserve(a, PROTO_TCP, 5050), "twice: refused");
        assert!(p.reserve(a, PROTO_TCP, 80), "outside the share: nothing to mark");
        assert_eq!(p.free_on(a, PROTO_TCP), 98);
        let mut got = HashSet::new();
        while let Some((_, x)) = p.alloc(0, &[a], PROTO_TCP) {
            got.insert(x);
        }
        assert_eq!(got.len(), 98);
        assert!(!got.contains(&5000) && !got.contains(&5050));
        // A taken port cannot be reserved; a released reservation is free again.
        p.release(a, PROTO_TCP, 5001);
        assert!(p.reserve(a, PROTO_TCP, 5001));
        p.release(a, PROTO_TCP, 5050);
        assert_eq!(p.alloc(0, &[a], PROTO_TCP), Some((a, 5050)));
    }

    #[test]
    fn a_peers_address_is_searched_from_this_nodes_slot() {
        let a = v4_to_addr([10, 0, 2, 200]);
        let mut owner = LportPools::new(R);
        let mut peer = LportPools::new(R);
        // The owner's connections, synced to the peer (reserved there).
        for _ in 0..10 {
            let (_, port) = owner.alloc(0, &[a], PROTO_TCP).unwrap();
            assert!(peer.reserve(a, PROTO_TCP, port));
        }
        // The owner's next port and the peer's first foreign one differ.
        let next_owner = owner.take_on(a, PROTO_TCP).unwrap();
        let first_peer = peer.take_foreign(a, PROTO_TCP, 3).unwrap();
        assert_eq!(next_owner, 5010);
        // Slot 3 of 256 starts 50 * 3 / 256 = 0 ports into the foreign half.
        assert_eq!(first_peer, 5050);
        // Another peer's slot starts elsewhere.
        let mut other = LportPools::new(R);
        assert_eq!(other.take_foreign(a, PROTO_TCP, 200).unwrap(), 5050 + 50 * 200 / 256);
        // Then in order from there, and around the share when full.
        assert_eq!(peer.take_foreign(a, PROTO_TCP, 3).unwrap(), first_peer + 1);
    }

    #[test]
    fn reshare_keeps_live_ports_taken() {
        let a = v4_to_addr([10, 0, 2, 200]);
        let mut p = LportPools::new(R);
        let live = p.alloc(0, &[a], PROTO_TCP).unwrap().1;
        let wider = PortRange { lo: 5000, hi: 5199 };
        p.reshare(wider, [(a, PROTO_TCP, live)].into_iter(), Vec::new());
        assert_eq!(p.free_on(a, PROTO_TCP), 199);
        for _ in 0..199 {
            assert_ne!(p.alloc(0, &[a], PROTO_TCP).unwrap().1, live);
        }
        p.release(a, PROTO_TCP, live);
        assert_eq!(p.free_on(a, PROTO_TCP), 1, "the carried port is free once its connection ends");
        assert_eq!(p.alloc(0, &[a], PROTO_TCP).unwrap().1, live);
    }
}
