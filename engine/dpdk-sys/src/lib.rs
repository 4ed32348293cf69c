//! Raw bindings to the system DPDK (22.11 LTS), generated at build time by
//! bindgen from `wrapper.h`, plus C wrappers for DPDK's `static inline`
//! functions (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, `rte_pktmbuf_free`,
//! `rte_lcore_id`, ...), so they are callable as ordinary `extern "C"`
//! functions.
//!
//! This crate is deliberately thin: no safe API lives here (that is
//! `ferrovs_engine::port::dpdk`). Where the build machine has no libdpdk
//! (pkg-config fails) the crate is empty and [`DPDK_AVAILABLE`] is false;
//! set `DPDK_SYS_REQUIRE=1` to make that a build error instead.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(dead_code, improper_ctypes, clippy::all, rustdoc::all)]

#[cfg(not(dpdk_missing))]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Whether this build found and bound a system DPDK.
pub const DPDK_AVAILABLE: bool = cfg!(not(dpdk_missing));

/// Put `dpdk_sys::require_dpdk!();` in code that needs the bindings: where
/// DPDK was missing at build time it stops compilation with one clear
/// message instead of a page of unresolved names.
#[cfg(not(dpdk_missing))]
#[macro_export]
macro_rules! require_dpdk {
    () => {};
}

#[cfg(dpdk_missing)]
#[macro_export]
macro_rules! require_dpdk {
    () => {
        compile_error!(
            "the `dpdk` feature needs the system DPDK: install libdpdk-dev and pkg-config \
             (pkg-config --modversion libdpdk must work), then rebuild dpdk-sys"
        );
    };
}
