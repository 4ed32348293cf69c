//! Tools built on the pipeline, outside the data path: nothing in
//! [`crate::pipeline`], [`crate::flow`] or [`crate::wire`] uses them.
//!
//! - [`bench`](mod@bench), [`sweep`]: `ferrovs bench` (the real pipeline on in-memory
//!   ports, synthetic traffic) and its sweep over flows and workers.
//! - [`gen`]: `ferrovs gen`, a pktgen-style generator on the port backends.
//! - [`replay`]: offline, deterministic replay of pcap files.
//! - [`frame`]: the allocation-free frame writer of `bench` and `gen`;
//!   [`testpkt`]: packet builders for fixtures, benches and fuzz seeds.

pub mod bench;
pub mod frame;
pub mod gen;
pub mod replay;
pub mod sweep;
pub mod testpkt;
