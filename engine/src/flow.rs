//! The per-worker flow table: a slab of connections plus a hashbrown map
//! from the 5-tuple as received to (slab index, direction). A NAT
//! connection has two keys (client side and real-server side); a DR
//! connection has one. Sized up front: the map and the slab never grow past
//! the configured capacity, so there are no rehash spikes.

use crate::parse::Addr;
use crate::tcpstate::TcpState;
use ferrovs_cfg::Forward;
use hashbrown::HashMap;

/// A 5-tuple exactly as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// Which way a packet travels relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to real server (through the VIP).
    In,
    /// Real server to client.
    Out,
}

pub const NONE: u32 = u32::MAX;

/// Connection flags.
pub const F_DATA: u8 = 1; // an FTP data connection (created from an expectation)
pub const F_ACTIVE_COUNTED: u8 = 2; // counted as active in the scheduler counts
pub const F_COUNTED: u8 = 4; // counted at all (active or inactive)

/// One tracked connection.
pub struct Conn {
    pub live: bool,
    pub gen: u32,
    pub proto: u8,
    pub fwd: Forward,
    pub flags: u8,
    pub state: TcpState,
    pub client: Addr,
    pub cport: u16,
    pub vip: Addr,
    pub vport: u16,
    pub rs: Addr,
    pub rport: u16,
    pub svc: u16,
    pub dest: u16,
    /// Snapshot generation the indices above refer to.
    pub snap_gen: u32,
    pub expires: u64,
    /// Precomputed checksum deltas (RFC 1624) for each direction.
    pub l3_in: u32,
    pub l4_in: u32,
    pub l3_out: u32,
    pub l4_out: u32,
    /// Egress interface and next hop towards the real server / the client.
    pub if_in: u8,
    pub if_out: u8,
    pub nh_in: Addr,
    pub nh_out: Addr,
    /// Cached next-hop MACs, valid while `mac_gen` equals the worker's
    /// neighbour generation.
    pub mac_in: [u8; 6],
    pub mac_out: [u8; 6],
    pub mac_gen: u32,
    /// FTP: the control connection of a data connection.
    pub parent: u32,
    pub parent_gen: u32,
    /// FTP: live data connections of a control connection.
    pub children: u32,
    pub alg: Option<Box<ferrovs_ftp_alg::FtpSession>>,
    pub pkts_in: u64,
    pub bytes_in: u64,
    pub pkts_out: u64,
    pub bytes_out: u64,
}

impl Conn {
    pub fn key_in(&self) -> FlowKey {
        FlowKey { src: self.client, dst: self.vip, sport: self.cport, dport: self.vport, proto: self.proto }
    }
    pub fn key_out(&self) -> FlowKey {
        FlowKey { src: self.rs, dst: self.client, sport: self.rport, dport: self.cport, proto: self.proto }
    }
    pub fn has_out_key(&self) -> bool {
        self.fwd == Forward::Nat
    }
}

pub struct FlowTable {
    map: HashMap<FlowKey, (u32, Dir)>,
    slab: Vec<Conn>,
    free: Vec<u32>,
    cap: usize,
    live: usize,
}

impl FlowTable {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(16);
        FlowTable {
            map: HashMap::with_capacity(cap * 2),
            slab: Vec::with_capacity(cap),
            free: Vec::new(),
            cap,
            live: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Slots in the slab (live or free); indices are below this.
    pub fn slots(&self) -> usize {
        self.slab.len()
    }

    /// Prefetch hint for the bucket of `k` (best effort).
    #[inline(always)]
    pub fn lookup(&self, k: &FlowKey) -> Option<(u32, Dir)> {
        self.map.get(k).copied()
    }

    #[inline(always)]
    pub fn get(&self, i: u32) -> &Conn {
        &self.slab[i as usize]
    }
    #[inline(always)]
    pub fn get_mut(&mut self, i: u32) -> &mut Conn {
        &mut self.slab[i as usize]
    }
    pub fn try_get(&self, i: u32) -> Option<&Conn> {
        self.slab.get(i as usize).filter(|c| c.live)
    }

    /// Insert a connection; fails when full or when one of its keys is
    /// already taken (a 5-tuple collision with a live connection).
    pub fn insert(&mut self, mut c: Conn) -> Result<u32, Conn> {
        if self.live >= self.cap {
            return Err(c);
        }
        let kin = c.key_in();
        let kout = c.key_out();
        if self.map.contains_key(&kin) || (c.has_out_key() && self.map.contains_key(&kout)) {
            return Err(c);
        }
        c.live = true;
        let idx = match self.free.pop() {
            Some(i) => {
                c.gen = self.slab[i as usize].gen.wrapping_add(1);
                self.slab[i as usize] = c;
                i
            }
            None => {
                c.gen = 1;
                self.slab.push(c);
                (self.slab.len() - 1) as u32
            }
        };
        let c = &self.slab[idx as usize];
        self.map.insert(kin, (idx, Dir::In));
        if c.has_out_key() {
            self.map.insert(kout, (idx, Dir::Out));
        }
        self.live += 1;
        Ok(idx)
    }

    /// Remove connection `i`; returns its FTP session and parent link.
    pub fn remove(&mut self, i: u32) {
        let c = &mut self.slab[i as usize];
        if !c.live {
            return;
        }
        c.live = false;
        c.alg = None;
        let kin = c.key_in();
        let kout = c.key_out();
        let out = c.has_out_key();
        self.map.remove(&kin);
        if out {
            self.map.remove(&kout);
        }
        self.free.push(i);
        self.live -= 1;
    }

    /// Approximate bytes of memory per connection slot (slab entry plus
    /// its map entries at the reserved load).
    pub fn bytes_per_flow(&self) -> usize {
        let entry = std::mem::size_of::<(FlowKey, (u32, Dir))>() + 1;
        std::mem::size_of::<Conn>() + 2 * entry * self.map.capacity() / self.cap.max(1)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn new_conn(
    proto: u8,
    fwd: Forward,
    client: Addr,
    cport: u16,
    vip: Addr,
    vport: u16,
    rs: Addr,
    rport: u16,
) -> Conn {
    Conn {
        live: false,
        gen: 0,
        proto,
        fwd,
        flags: 0,
        state: if proto == crate::parse::PROTO_TCP { TcpState::None } else { TcpState::Udp },
        client,
        cport,
        vip,
        vport,
        rs,
        rport,
        svc: 0,
        dest: 0,
        snap_gen: 0,
        expires: 0,
        l3_in: 0,
        l4_in: 0,
        l3_out: 0,
        l4_out: 0,
        if_in: 0,
        if_out: 0,
        nh_in: 0,
        nh_out: 0,
        mac_in: [0; 6],
        mac_out: [0; 6],
        mac_gen: u32::MAX,
        parent: NONE,
        parent_gen: 0,
        children: 0,
        alg: None,
        pkts_in: 0,
        bytes_in: 0,
        pkts_out: 0,
        bytes_out: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::v4_to_addr;

    fn conn(c: u8, fwd: Forward) -> Conn {
        new_conn(6, fwd, v4_to_addr([10, 0, 1, c]), 1000, v4_to_addr([10, 0, 1, 100]), 80, v4_to_addr([10, 0, 2, 2]), 80)
    }

    #[test]
    fn insert_lookup_remove_both_keys() {
        let mut t = FlowTable::new(16);
        let i = t.insert(conn(2, Forward::Nat)).ok().unwrap();
        let c = t.get(i);
        assert_eq!(t.lookup(&c.key_in()), Some((i, Dir::In)));
        assert_eq!(t.lookup(&c.key_out()), Some((i, Dir::Out)));
        let (kin, kout) = (c.key_in(), c.key_out());
        t.remove(i);
        assert_eq!(t.lookup(&kin), None);
        assert_eq!(t.lookup(&kout), None);
        assert!(t.is_empty());
        let j = t.insert(conn(3, Forward::Dr)).ok().unwrap();
        assert_eq!(j, i, "slot reused");
        assert_eq!(t.get(j).gen, 2, "generation bumped");
        assert_eq!(t.lookup(&t.get(j).key_out()), None, "DR has no reply key");
    }

    #[test]
    fn full_and_duplicate() {
        let mut t = FlowTable::new(16);
        for c in 0..16 {
            assert!(t.insert(conn(c, Forward::Nat)).is_ok());
        }
        assert!(t.insert(conn(200, Forward::Nat)).is_err(), "full");
        let mut t = FlowTable::new(16);
        assert!(t.insert(conn(1, Forward::Nat)).is_ok());
        assert!(t.insert(conn(1, Forward::Nat)).is_err(), "same tuple");
    }
}
