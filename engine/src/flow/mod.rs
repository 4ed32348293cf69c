//! Connection state, one table per worker, driven by a clock passed in.
//!
//! - [`table`] (re-exported here): the flow table, a slab of connections
//!   and an open-addressing index keyed by the 5-tuple as received.
//! - [`tcpstate`]: IPVS TCP states, transitions and timeouts.
//! - [`expect`]: FTP expectations (pinholes) the gateway announced.
//! - [`frag`]: IP fragments of tracked connections, forwarded without
//!   reassembly.

pub mod expect;
pub mod frag;
pub mod table;
pub mod tcpstate;

pub use table::*;
