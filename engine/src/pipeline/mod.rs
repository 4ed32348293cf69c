//! The packet pipeline of one poll-mode worker: everything between a
//! received frame and its verdict.
//!
//! - [`worker`]: the sans-IO core of a worker (frames and time in, verdicts,
//!   frames to transmit and timers out) and classification: an established
//!   connection's packet is looked up in the flow table first and forwarded
//!   without any VIP/local classification; misses are classified (VIP,
//!   local address, reply, FTP data, ICMP error), scheduled and rewritten
//!   for NAT / DR / tunnel; its child modules (`worker/`) hold the path itself:
//!   the burst's passes and express lane, classification, new connections,
//!   forwarding, expiry, ARP/ND and echo, ICMP, fragments, the SYN proxy's and
//!   the PROXY protocol's glue, the FTP gateway's glue, reloads and cluster sync.
//! - [`driver`]: the poll loop around the core: it owns the port queues, rx
//!   bursts, the kernel-port passthrough and the handoff / control rings.
//! - [`nat`]: the NAT and tunnel header rewrites (precomputed checksum
//!   deltas, IPIP / IPv6-in-IPv6); [`fnat`]: full NAT local ports and the
//!   two-sided rewrite; [`nat64`]: the IPv6 <-> IPv4 translation of full NAT
//!   across families (RFC 7915);
//!   [`proxyproto`]: the PROXY protocol header towards a real server;
//!   [`synproxy`]: the SYN proxy with SYN cookies.
//! - [`neigh`]: ARP / neighbour discovery, the neighbour cache and packets
//!   parked while a next hop resolves; [`icmpgen`]: ICMP errors the
//!   balancer originates, rate-limited; [`pmtu`]: path MTUs learnt towards tunnel real
//!   servers from routers' errors.
//! - [`acl`]: the services' source access lists (`allow_from`, `deny_from`).
//! - [`snapshot`]: the configuration compiled for lookups, shared as an
//!   immutable `Arc` and replaced wholesale on reload; [`remap`]: which
//!   service and real server of the new snapshot each old one became.
//! - [`counters`]: per-worker counters, written by one worker, read by
//!   anyone; [`ratelimit`]: a token bucket for packet-triggered log lines.

pub mod acl;
pub mod counters;
pub mod driver;
pub mod fnat;
pub mod icmpgen;
pub mod nat;
pub mod nat64;
pub mod neigh;
pub mod pmtu;
pub mod proxyproto;
pub mod ratelimit;
pub mod remap;
pub mod snapshot;
pub mod synproxy;
pub mod worker;
