//! Generates bindings to the system DPDK with bindgen and compiles C
//! wrappers for DPDK's `static inline` functions (the fast path:
//! rte_eth_rx_burst, rte_pktmbuf_alloc, ...) with the cc crate.
//!
//! Where pkg-config finds no libdpdk the crate builds empty (cfg
//! `dpdk_missing`) with a cargo warning, so the workspace builds on machines
//! without DPDK. `DPDK_SYS_REQUIRE=1` turns that into a hard error.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let pc = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&pc).args(args).arg("libdpdk").output().map_err(|e| format!("cannot run {pc}: {e}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let msg = if msg.is_empty() { out.status.to_string() } else { msg };
        return Err(format!("`{pc} {} libdpdk` failed: {msg}", args.join(" ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rustc-check-cfg=cfg(dpdk_missing)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=DPDK_SYS_REQUIRE");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let require = env::var("DPDK_SYS_REQUIRE").map(|v| v == "1").unwrap_or(false);
    let (cflags, libs, version) =
        match (pkg_config(&["--cflags"]), pkg_config(&["--libs"]), pkg_config(&["--modversion"])) {
            (Ok(c), Ok(l), Ok(v)) => (c, l, v),
            (c, l, v) => {
                let why = [c.err(), l.err(), v.err()].into_iter().flatten().next().unwrap_or_default();
                if require {
                    panic!("DPDK_SYS_REQUIRE=1 but libdpdk was not found: {why}");
                }
                println!(
                    "cargo:warning=libdpdk not found ({why}); dpdk-sys is built empty. \
                 Install libdpdk-dev (Debian) for the DPDK backend."
                );
                println!("cargo:rustc-cfg=dpdk_missing");
                println!("cargo:missing=1");
                return;
            }
        };
    println!("cargo:version={version}");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let header = manifest.join("wrapper.h");
    let cflags: Vec<String> = cflags.split_whitespace().map(str::to_string).collect();

    let bindings = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .clang_args(&cflags)
        .allowlist_function("rte_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_function("ferrovs_.*")
        .allowlist_var("SOCKET_ID_ANY")
        // Without these two: E0588 "packed type cannot transitively contain
        // a #[repr(align)] type" (rte_flow item structs).
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(out.join("extern"))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on DPDK {version} headers: {e}"));
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings.rs");

    // The C wrappers for static inline functions, built with DPDK's own
    // cflags (-include rte_config.h, -march=...). cc prints its link lines
    // now, so the archive comes before the -lrte_* below on the link line.
    let mut build = cc::Build::new();
    build.file(out.join("extern.c")).include(&manifest).warnings(false).opt_level(2);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("dpdk_sys_static_wrappers");

    // Link the DPDK libraries. The PMDs themselves are not linked: in the
    // shared build EAL dlopen()s every driver in RTE_EAL_PMD_PATH
    // (net_ring, net_af_packet, mempool_ring, bus_vdev, ...) at rte_eal_init,
    // provided librte_eal is a shared library of the process (it is).
    // pkg-config's `-Wl,--as-needed` is dropped: rustc links with
    // --as-needed anyway, which is harmless here because every library whose
    // constructors matter (eal, mempool, ring, mbuf, ethdev) is referenced by
    // the wrappers or is a DT_NEEDED of one that is (`-as-needed` as a link
    // modifier is nightly-only). tests/dpdk.rs checks that vdev PMDs probe.
    for tok in libs.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
