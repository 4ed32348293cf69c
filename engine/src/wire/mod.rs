//! The wire layer: what a frame looks like, nothing about connections.
//!
//! - [`parse`]: Ethernet, one optional 802.1Q tag, IPv4, IPv6, TCP, UDP,
//!   ICMP/ICMPv6 and ARP into offsets and flow fields: a hand-written fast
//!   parser for the common TCP/UDP case, etherparse (the reference) for the
//!   rest.
//! - [`csum`]: full Internet checksums for frames the engine builds and
//!   RFC 1624 incremental updates for frames it rewrites.
//! - [`ipfrag`]: IPv4 output fragmentation, for a packet with DF clear over the egress MTU.
//! - [`view`]: typed views over a frame's headers (Ethernet addresses, IPv4, IPv6,
//!   TCP, UDP, ICMP, the port word), taken by checked constructors, so the pipeline
//!   reads and writes named fields, not offsets.
//! - [`tcpopt`]: a bounds-checked TCP options walker (MSS clamping, SACK
//!   edges, window scale, timestamps).

pub mod csum;
pub mod ipfrag;
pub mod parse;
pub mod tcpopt;
pub mod view;
