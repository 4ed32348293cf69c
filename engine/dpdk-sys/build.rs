//! Generates bindings to the system DPDK with bindgen and compiles C
//! wrappers for DPDK's `static inline` functions (the fast path:
//! rte_eth_rx_burst, rte_pktmbuf_alloc, ...) with the cc crate.
//!
//! Where pkg-config finds no libdpdk the crate builds empty (cfg
//! `dpdk_missing`) with a cargo warning, so the workspace builds on machines
//! without DPDK. `DPDK_SYS_REQUIRE=1` turns that into a hard error.

//!
//! Installing DPDK later must not need `cargo clean -p dpdk-sys`: the script
//! tells cargo which files and directories pkg-config's answer depends on
//! (see [`watch_paths`]), so a later build reruns it exactly when
//! libdpdk.pc appears or changes, or the pkg-config environment changes.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variables that change what pkg-config answers.
const PKG_CONFIG_ENV: &[&str] = &[
    "PKG_CONFIG",
    "PKG_CONFIG_PATH",
    "PKG_CONFIG_LIBDIR",
    "PKG_CONFIG_SYSROOT_DIR",
    "PKG_CONFIG_ALLOW_SYSTEM_CFLAGS",
    "PKG_CONFIG_ALLOW_SYSTEM_LIBS",
];

/// The directories pkg-config searches for `libdpdk.pc`, in its order:
/// `$PKG_CONFIG_PATH`, then `$PKG_CONFIG_LIBDIR` or pkg-config's built-in
/// `pc_path`.
fn pc_search_path(pc: &str) -> Vec<PathBuf> {
    let split = |v: &str| v.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect::<Vec<_>>();
    let mut dirs = env::var("PKG_CONFIG_PATH").map(|v| split(&v)).unwrap_or_default();
    let builtin = match env::var("PKG_CONFIG_LIBDIR") {
        Ok(v) => v,
        Err(_) => Command::new(pc)
            .args(["--variable", "pc_path", "pkg-config"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    };
    dirs.extend(split(&builtin));
    dirs
}

/// What cargo must watch so that the next build reruns this script when the
/// answer for libdpdk could differ, without rerunning it on every build.
///
/// cargo reruns a script on every build when a `rerun-if-changed` path does
/// not exist, and for a directory it compares the newest mtime below it
/// (a file added to a directory changes the directory's mtime even when the
/// package manager keeps the file's own, older mtime). So:
/// - `found`: the .pc file pkg-config used, and every search directory
///   before it (a libdpdk.pc installed there would shadow it).
/// - not found: every search directory; one that does not exist yet is
///   watched through its nearest existing ancestor (a `meson install` into
///   /usr/local creates lib/x86_64-linux-gnu/pkgconfig), but never `/`.
fn watch_paths(search: &[PathBuf], found: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for dir in search {
        if let Some(f) = found {
            if f.parent() == Some(dir.as_path()) {
                break;
            }
        }
        let mut d = dir.as_path();
        while !d.exists() {
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        if d.exists() && d.parent().is_some() {
            push(d.to_path_buf());
        }
    }
    if let Some(f) = found {
        push(f.to_path_buf());
    }
    out
}

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

    for var in PKG_CONFIG_ENV {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(target) = env::var("TARGET") {
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH_{}", target.replace('-', "_"));
    }
    let pc = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let pc_file = pkg_config(&["--variable", "pcfiledir"]).ok().map(|d| Path::new(&d).join("libdpdk.pc"));
    for p in watch_paths(&pc_search_path(&pc), pc_file.as_deref().filter(|f| f.exists())) {
        println!("cargo:rerun-if-changed={}", p.display());
    }

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
