//! Per-worker counters. Each counter block is written by exactly one worker
//! (load + store, no read-modify-write bus lock) and read by anyone with
//! relaxed loads: the control plane sums the blocks of all workers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! drop_reasons {
    ($($name:ident => $label:literal : $doc:literal,)*) => {
        /// Why a packet was dropped. Every drop is counted under one reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $(#[doc = $doc] $name,)* }
        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

/// The drop for a failed checksum ([`crate::wire::csum::verify`]).
impl From<crate::wire::csum::Bad> for DropReason {
    fn from(b: crate::wire::csum::Bad) -> Self {
        match b {
            crate::wire::csum::Bad::IpHeader => DropReason::IpBadChecksum,
            crate::wire::csum::Bad::L4 => DropReason::L4BadChecksum,
        }
    }
}

drop_reasons! {
    Malformed => "malformed": "Truncated headers, bad lengths, bad IHL, garbage.",
    IpBadChecksum => "ip_bad_csum": "An IPv4 packet with a bad header checksum (Linux `ip_rcv`: `InCsumErrors`) where the engine would build a header or a packet anew from it (a fragment, a reply or error it answers, an ICMP error it translates, a segment the SYN proxy, the FTP gateway or PROXY protocol rewrites, full NAT to IPv6): a fresh checksum would launder the corruption. Packets only rewritten (incremental checksum updates) keep it and are not checked.",
    L4BadChecksum => "l4_bad_csum": "A TCP, UDP, ICMP or ICMPv6 checksum that fails (Linux connection tracking's `tcp_error` / `udp_error` / `icmp_error`, `icmp_reply` for an echo: never NATed nor given to a helper) where the engine would write the segment or message anew over its received bytes with a fresh checksum (a segment the FTP gateway parses, the PROXY protocol header's segment, an echo reply, an ICMP error it translates, the SYN proxy's segments): the corruption would reach the peer's application as good data. Segments only rewritten (incremental checksum updates) keep it and are not checked.",
    Unsupported => "unsupported": "A protocol or EtherType the engine does not forward; or a router's ICMP error about a tunnel packet with nothing to tell its client (across families, one with no translation; a parameter problem pointing into the outer header the balancer built).",
    Fragment => "fragment": "An IP fragment the engine cannot forward (IPv6 extension headers before the fragment header, not TCP/UDP), or an ICMP error quoting a later fragment (no ports in the quote).",
    FragTiny => "frag_tiny": "A first fragment without its whole transport header, or a TCP fragment at offset 8 (RFC 1858).",
    FragOverlap => "frag_overlap": "A fragment overlapping another of its datagram (the whole datagram is dropped).",
    FragDuplicate => "frag_duplicate": "A fragment whose bytes were all seen before in its datagram (a copy): dropped alone, its datagram goes on (as Linux's reassembly does).",
    FragTimeout => "frag_timeout": "A fragment whose first fragment never came (or whose datagram expired).",
    FragHeldFull => "frag_held_full": "No room to hold a fragment that came before its first fragment: the buffer was full and its source (IPv4 address, IPv6 /64) held as many as any other, or it was the oldest of the source holding the most and made room for another source's.",
    BadCookie => "bad_cookie": "SYN proxy: an ACK for no connection whose cookie is invalid.",
    SynVerified => "syn_verified": "DR/tunnel SYN proxy: a client's reset answering a verification SYN-ACK, consumed (its address is now verified).",
    ProxyUnacceptable => "proxy_unacceptable": "SYN proxy, while the real server's handshake is pending: a real server's segment that does not acknowledge our SYN (RFC 793 SYN-SENT: a SYN-ACK or reset with another acknowledgement, a reset without one) or carries neither SYN nor RST (the connection keeps waiting); a client reset outside the window offered; a segment after the client's reset.",
    ProxyWait => "proxy_wait": "SYN proxy: client data while the real server's handshake is pending, with no room to hold it (or held too long, or discarded by the client's reset).",
    MartianSource => "martian_source": "A new connection to a VIP from a source no packet may carry (Linux's martian sources): 0.0.0.0/8, loopback, multicast, a broadcast address, a VIP or one of the balancer's own addresses. Nothing is created and the SYN proxy does not answer it.",
    RpFilter => "rp_filter": "A new connection to a VIP whose source fails `[engine] rp_filter`: no route back to it (loose), or the route leaves through another interface than the one the packet came in on (strict). Nothing is created and the SYN proxy does not answer it.",
    SourceDenied => "source_denied": "A new connection from a source the service's `allow_from` / `deny_from` refuses. Nothing is created and the SYN proxy does not answer it.",
    SourceRate => "source_rate": "A new connection over its client address's `source_conn_rate` for the service (exact per node: every connection of a client belongs to one worker). Nothing is created.",
    NoService => "no_service": "Addressed to a VIP/port with no service.",
    NoRealServer => "no_real_server": "The scheduler found no available real server.",
    FnatPortsExhausted => "fnat_ports_exhausted": "Full NAT: no free local port on any local address of the service (this worker's share).",
    NoFlow => "no_flow": "A non-SYN TCP segment or reply with no tracked connection (or an ICMP error quoting none, or, about a tunnel packet, quoting one that is not a tunnel connection to the quoted real server).",
    TableFull => "table_full": "The flow table is at capacity.",
    TupleInUse => "tuple_in_use": "An active FTP data connection whose translated 5-tuple (VIP:20 or the server's own port, to the client's port) belongs to a connection that is still open.",
    NoRoute => "no_route": "No route to the destination.",
    NoNeighbor => "no_neighbor": "The next hop's MAC could not be resolved in time.",
    TtlExceeded => "ttl_exceeded": "TTL or hop limit ran out.",
    NotForUs => "not_for_us": "Addressed to a MAC or IP the engine does not own (another host's, or the kernel's own address on an AF_PACKET port).",
    HandoffFull => "handoff_full": "The ring to the owning worker was full.",
    TxFull => "tx_full": "The port's transmit queue was full.",
    NoBuffer => "no_buffer": "No free buffer to build a packet.",
    TooBig => "too_big": "A packet does not fit the egress MTU (and no ICMP error went back for it: an ICMP error or later fragment, rate-limited, IPv4 without DF that cannot be cut (an MTU under 28 bytes, full NAT across families); likewise a router's error about a tunnel packet not relayed to its client) or a rewrite outgrew the buffer.",
    AlgHold => "alg_hold": "An FTP segment held back by the gateway until its line completes.",
    XlatUnsupported => "xlat_unsupported": "Full NAT across families (IPv6 <-> IPv4): a packet that cannot be translated (IPv6 extension headers, an IP fragment, an ICMP error with no translation, a protocol other than TCP/UDP).",
    OutOfWindow => "out_of_window": "FTP control connection: data beyond the largest window TCP can announce (65535 << 14) past what the gateway expects.",
}

pub const N_DROPS: usize = DropReason::ALL.len();

/// A worker's drop counters, one per [`DropReason`] (an array longer than 32, which
/// `Default` does not derive for).
pub struct Drops(pub [AtomicU64; N_DROPS]);

impl Default for Drops {
    fn default() -> Self {
        Drops(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::ops::Deref for Drops {
    type Target = [AtomicU64; N_DROPS];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// One list of a worker's event counters gives the shared block ([`WorkerCounters`], each
/// counter an `AtomicU64`), its plain copy ([`CounterSnapshot`]), the copy, the reset and the
/// sum over workers, so a new counter is written once.
macro_rules! worker_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Counters of one worker.
        #[derive(Default)]
        pub struct WorkerCounters {
            $($(#[$doc])* pub $name: AtomicU64,)*
            pub drops: Drops,
        }

        /// A plain copy of a worker's counters (or of their sum over workers,
        /// [`CounterSnapshot::add`]).
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct CounterSnapshot {
            $($(#[$doc])* pub $name: u64,)*
            /// Per [`DropReason`], in [`DropReason::ALL`]'s order: (label, count).
            pub drops: Vec<(&'static str, u64)>,
        }

        impl WorkerCounters {
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot {
                    $($name: self.$name.load(Relaxed),)*
                    drops: DropReason::ALL.iter().map(|r| (r.label(), self.drops_of(*r))).collect(),
                }
            }
            /// Zero every counter (tests and fuzzing reuse an engine between runs).
            pub fn reset(&self) {
                $(self.$name.store(0, Relaxed);)*
                for d in self.drops.iter() {
                    d.store(0, Relaxed);
                }
            }
        }

        impl CounterSnapshot {
            /// Add another worker's counters (wrapping: `flows_active` is a gauge a worker
            /// may take below zero when its connections were counted on another).
            pub fn add(&mut self, o: &CounterSnapshot) {
                $(self.$name = self.$name.wrapping_add(o.$name);)*
                if self.drops.is_empty() {
                    self.drops = o.drops.clone();
                } else {
                    for (t, (_, v)) in self.drops.iter_mut().zip(o.drops.iter()) {
                        t.1 += v;
                    }
                }
            }
        }
    };
}

worker_counters! {
    rx_packets,
    rx_bytes,
    tx_packets,
    tx_bytes,
    flows_created,
    flows_expired,
    /// A SYN reused the tuple of a closing connection, which was replaced (IPVS
    /// `conn_reuse_mode`).
    flows_reused,
    /// Cluster: a mid-connection packet of a DR/tunnel connection this node did not know
    /// (ECMP moved it here) recreated the connection by the cluster-wide Maglev choice.
    flows_recreated,
    /// Client TCP segments with SYN, FIN or RST outside the sequence window of their
    /// established connection (`Conn::client_seq_ok`): forwarded (the server judges them),
    /// the connection's state left as it was (a blind reset does not close it).
    tcp_out_of_window,
    /// Cluster sync: entries from peers installed (connections, templates, expectations) and
    /// entries that could not be (no such service or real server here, table full, control
    /// connection unknown, or the sync queue towards the sync thread full; entries about a
    /// connection this node carries itself are `sync_carried`).
    sync_installed,
    sync_skipped,
    /// Cluster sync: installed FTP expectations whose timeout was over this node's
    /// `pinhole_timeout`, cut to it (a peer configured otherwise, or a forged entry).
    sync_capped,
    /// Cluster sync: peers' entries for a connection this node carries traffic for itself
    /// (not a backup): its own state kept, the entry ignored.
    sync_carried,
    /// Cluster, full NAT: packets of FTP control connections sent on to the node that handles
    /// the session (the owner of its local address, or the designated survivor of a failed
    /// owner), and packets that had been redirected by a peer already and would have been
    /// again (views of the peers' liveness differ): handled here instead (at most one hop).
    redirected,
    redirect_loop,
    flows_active,
    handoff_out,
    handoff_in,
    arp_replies,
    nd_replies,
    /// Dynamic neighbour entries evicted because the table was full.
    neigh_evicted,
    /// Neighbours not learnt from unsolicited ARP/ND (nobody asked for them) because the
    /// table was full and evictions for such neighbours were over their rate.
    neigh_limited,
    /// ARP and neighbour discovery whose sender (an ARP sender address, an advertisement's
    /// target, a solicitation's source) is one of our own addresses (an interface address,
    /// a VIP, a full NAT local address): an address conflict or a poisoning attempt, not
    /// learnt (a DR real server without `arp_announce = 2` ARPs from the VIP too).
    arp_own_addr,
    /// IP fragments: datagrams in flight forgotten to make room for a new one (the oldest of
    /// a source at its share, or of the source holding the most when the table was full);
    /// their later fragments then wait for a first fragment that has gone, and time out.
    frag_evicted,
    /// Unicast probes of neighbours in use not confirmed for the reachable time, and
    /// entries removed because their probes went unanswered (resolved again by broadcast).
    neigh_probes,
    neigh_failed,
    icmp_translated,
    icmp_echo_replies,
    /// SYN proxy: SYN-ACKs with a cookie sent, client ACKs whose cookie was valid (a
    /// connection was opened) and invalid ones.
    cookies_sent,
    cookies_validated,
    cookies_failed,
    /// SYN proxy: SYNs sent to a real server again (it had not answered the last one within
    /// a second when a client segment of the connection arrived).
    proxy_syn_retries,
    /// Extra segments the worker built itself by cutting a rewritten FTP
    /// segment that outgrew the MTU (one per piece beyond the first), for
    /// packet accounting: each then went out, was dropped or parked.
    split_segments,
    /// IPv4 fragments the worker cut packets into (each fragment counted, the first
    /// included): packets with DF clear over the egress MTU once rewritten or encapsulated,
    /// sent as fragments as Linux's output path does instead of a `too_big` drop.
    frags_made,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" the worker originated (each turned
    /// a packet too big for the egress MTU into the error back to its sender), and those the
    /// `[engine] icmp_rate` token bucket suppressed (the packet is then a `too_big` drop).
    icmp_sent,
    icmp_ratelimited,
    /// Tunnel mode: path MTUs towards a real server learnt (lowered or refreshed) from a
    /// router's validated "fragmentation needed" / "packet too big" about a tunnel packet, and
    /// learnt ones forgotten to make room in the worker's table (`pipeline::pmtu`).
    tunnel_mtu_learnt,
    tunnel_mtu_evicted,
    /// Full NAT: connections still open on a local address a reload removed when its grace
    /// period (the longest timeout) ended, removed.
    fnat_laddr_retired,
    /// Connections a reload removed because the changed `allow_from` / `deny_from` of their
    /// service now refuse their client.
    acl_removed,
    /// Configuration snapshots installed in place (every service and real server kept its
    /// index: a health-check flap, a weight edit, something added at the end), and those that
    /// remapped every connection of the table (a real server or service removed or moved, an
    /// access list changed).
    snapshots_in_place,
    snapshots_remapped,
    /// Exception path (`interface.kernel_port`): frames passed to the kernel, frames the
    /// kernel sent out through the port, and frames for the kernel over `[engine] kernel_rate`
    /// (dropped).
    to_kernel,
    from_kernel,
    kernel_limited,
}

/// Add `n` to a single-writer counter.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerCounters {
    #[inline(always)]
    pub fn count_drop(&self, r: DropReason) {
        bump(&self.drops[r as usize], 1);
    }
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }
}

/// Per real server counters (one block per worker, per service).
#[derive(Default)]
pub struct DestCounters {
    pub conns: AtomicU64,
    pub in_packets: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_packets: AtomicU64,
    pub out_bytes: AtomicU64,
}

/// FTP gateway counters of one service on one worker.
#[derive(Default)]
pub struct FtpCounters {
    pub control_sessions: AtomicU64,
    pub expectations_created: AtomicU64,
    pub expectations_used: AtomicU64,
    pub expectations_expired: AtomicU64,
    pub rewrites: AtomicU64,
    pub bounce_refused: AtomicU64,
    pub tls_fallbacks: AtomicU64,
    pub oversized_lines: AtomicU64,
    pub held_segments: AtomicU64,
    /// A session's newer PASV/PORT replaced its oldest expectation (per-session limit).
    pub expectations_replaced: AtomicU64,
    /// The worker's expectation table was full: an expectation was evicted.
    pub expectations_evicted: AtomicU64,
    /// A passive expectation moved to another VIP port because another session expected the
    /// announced one (the 227/229 was rewritten).
    pub expectations_moved: AtomicU64,
    /// An expectation refused because another session holds it (active mode: the client's
    /// port cannot be moved).
    pub expectations_refused: AtomicU64,
    /// DR passive: two sessions of one client address on different real servers wait for a
    /// data connection to the VIP at once; the balancer cannot tell them apart (it sees no
    /// reply), so the newer is refused (also counted as refused).
    pub expectations_ambiguous: AtomicU64,
    /// 227/229 replies that answered no pending PASV/EPSV (or sat in a multi-line reply).
    pub unsolicited_replies: AtomicU64,
    /// Data ports below 1024 refused.
    pub low_ports_refused: AtomicU64,
    /// AUTH TLS refused by the server: the session went on in plain text.
    pub tls_refused: AtomicU64,
    /// A SYN reused the tuple of a closing connection (TIME_WAIT/CLOSE/CLOSE_WAIT/LAST_ACK): the
    /// old connection and its gateway state were dropped and the SYN started a new one.
    pub control_reused: AtomicU64,
}

impl FtpCounters {
    /// The counters' names, in display order.
    pub fn names() -> [&'static str; 18] {
        Self::default().fields().map(|(n, _)| n)
    }

    /// Every counter with its name, in display order (one list for the CLI, the control
    /// socket and Prometheus).
    pub fn fields(&self) -> [(&'static str, &AtomicU64); 18] {
        [
            ("control_sessions", &self.control_sessions),
            ("expectations_created", &self.expectations_created),
            ("expectations_used", &self.expectations_used),
            ("expectations_expired", &self.expectations_expired),
            ("expectations_replaced", &self.expectations_replaced),
            ("expectations_evicted", &self.expectations_evicted),
            ("expectations_moved", &self.expectations_moved),
            ("expectations_refused", &self.expectations_refused),
            ("expectations_ambiguous", &self.expectations_ambiguous),
            ("rewrites", &self.rewrites),
            ("bounce_refused", &self.bounce_refused),
            ("low_ports_refused", &self.low_ports_refused),
            ("unsolicited_replies", &self.unsolicited_replies),
            ("tls_fallbacks", &self.tls_fallbacks),
            ("tls_refused", &self.tls_refused),
            ("oversized_lines", &self.oversized_lines),
            ("held_segments", &self.held_segments),
            ("control_reused", &self.control_reused),
        ]
    }
}

/// The reasons a service refuses a new connection once its packet is known to be for it,
/// counted per service as well as per worker ([`ServiceCounters::refused`]): which service
/// turns clients away, and why.
pub const REFUSALS: [DropReason; 5] = [
    DropReason::SourceDenied,
    DropReason::SourceRate,
    DropReason::NoRealServer,
    DropReason::FnatPortsExhausted,
    DropReason::TableFull,
];

/// New connections one service refused on one worker, one counter per [`REFUSALS`] entry.
#[derive(Default)]
pub struct Refusals(pub [AtomicU64; REFUSALS.len()]);

impl Refusals {
    /// Count a refusal for `r` (nothing for a reason not in [`REFUSALS`]).
    pub fn count(&self, r: DropReason) {
        if let Some(i) = REFUSALS.iter().position(|&x| x == r) {
            bump(&self.0[i], 1);
        }
    }

    /// Every counter with its reason, in [`REFUSALS`] order.
    pub fn fields(&self) -> impl Iterator<Item = (DropReason, &AtomicU64)> {
        REFUSALS.iter().copied().zip(self.0.iter())
    }
}

/// Per service counters of one worker. `conns` and the FTP counters are
/// updated as events happen; the packet and byte counters (service and
/// real server) are accumulated worker-locally per packet and folded in at
/// the end of every `Worker::poll` (`Worker::flush_svc_counters`), so
/// readers see them at most one poll iteration late.
#[derive(Default)]
pub struct ServiceCounters {
    pub conns: AtomicU64,
    pub in_packets: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_packets: AtomicU64,
    pub out_bytes: AtomicU64,
    pub dests: Vec<DestCounters>,
    pub ftp: FtpCounters,
    /// New connections refused (see [`REFUSALS`]).
    pub refused: Refusals,
}

impl ServiceCounters {
    pub fn new(dests: usize) -> Self {
        ServiceCounters { dests: (0..dests).map(|_| DestCounters::default()).collect(), ..Default::default() }
    }
}
