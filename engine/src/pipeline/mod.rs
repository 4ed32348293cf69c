//! The packet pipeline of one poll-mode worker: everything between a
//! received frame and its verdict.
//!
//! - [`worker`]: the poll loop and classification: an established
//!   connection's packet is looked up in the flow table first and forwarded
//!   without any VIP/local classification; misses are classified (VIP,
//!   local address, reply, FTP data, ICMP error), scheduled and rewritten
//!   for NAT / DR / tunnel; the FTP gateway's glue lives here and in its
//!   child module `worker_tcp`.
//! - [`fnat`]: full NAT local ports and the two-sided rewrite;
//!   [`proxyproto`]: the PROXY protocol header towards a real server;
//!   [`synproxy`]: the SYN proxy with SYN cookies.
//! - [`neigh`]: ARP / neighbour discovery, the neighbour cache and packets
//!   parked while a next hop resolves; [`icmpgen`]: ICMP errors the
//!   balancer originates, rate-limited.
//! - [`snapshot`]: the configuration compiled for lookups, shared as an
//!   immutable `Arc` and replaced wholesale on reload; [`remap`]: which
//!   service and real server of the new snapshot each old one became.
//! - [`counters`]: per-worker counters, written by one worker, read by
//!   anyone; [`ratelimit`]: a token bucket for packet-triggered log lines.

pub mod counters;
pub mod fnat;
pub mod icmpgen;
pub mod neigh;
pub mod proxyproto;
pub mod ratelimit;
pub mod remap;
pub mod snapshot;
pub mod synproxy;
pub mod worker;
