//! DPDK backend (feature `dpdk`): poll-mode drivers through the system
//! DPDK 22.11, bound by the thin `dpdk-sys` crate.
//!
//! # Shape
//! [`DpdkBackend::open`] initialises EAL once per process, opens every
//! configured interface as an ethdev port with one rx/tx queue pair per
//! worker, creates one mbuf pool per port and starts the ports.
//! [`DpdkBackend::take_queues`] hands out `[worker][interface]` [`DpdkQueue`]s.
//! Received frames stay in their mbufs: [`Mbuf`] implements [`Packet`] over
//! the mbuf's data room, and `rx_burst`/`tx_burst` move mbuf pointers
//! between the PMD and the caller's `Vec` without copying a byte.
//!
//! # Devices
//! `interfaces[].device` is either a vdev spec (anything starting with
//! `net_`, e.g. `net_af_packet0,iface=eth1,qpairs=2`, passed as `--vdev`) or
//! a PCI address (`0000:01:00.0` or `01:00.0`, optionally followed by
//! `,devargs`; passed as `-a`). The port is then looked up by the device
//! name (the part before the first comma).
//!
//! # Threads and lcores
//! Workers are ordinary threads pinned by the engine, not EAL lcores
//! (`rte_eal_remote_launch` is not used). EAL still needs a main lcore: if
//! `eal_args` hold no `-l`/`--lcores`/`-c`, ferrovs passes `-l N` with N the
//! first CPU the process may run on, and afterwards restores the calling
//! thread's CPU affinity, which rte_eal_init had narrowed to that CPU (so
//! the control plane is not squeezed onto a worker's core). With an
//! explicit lcore option the user's choice stands, affinity included.
//!
//! Each worker thread calls [`register_thread`] once, after pinning itself:
//! `rte_thread_register` gives the thread an lcore id (from the ids EAL does
//! not use), which is what lets the mempool use a per-lcore cache for that
//! thread. A thread without an lcore id is still correct, only slower: the
//! mempool then goes straight to its multi-producer/multi-consumer ring.
//!
//! # Offloads
//! None are enabled. Checksum offload would need per-mbuf `ol_flags`
//! (rx verdicts, tx `l2_len`/`l3_len`), which the [`Packet`] trait does not
//! carry, so the pipeline computes checksums itself. `MBUF_FAST_FREE` is off on
//! purpose: a forwarded mbuf is transmitted on a port other than the one
//! whose pool it came from. RSS is configured (IP + TCP/UDP ports, default
//! key) only when the PMD reports hash types (`flow_type_rss_offloads`) and
//! there is more than one queue; af_packet reports none and spreads flows
//! with the kernel's packet fanout instead.

use super::{Packet, PortCaps, PortQueue, TxResult, BURST, HEADROOM, MAX_FRAME};
use dpdk_sys as ffi;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

dpdk_sys::require_dpdk!();

// The pipeline relies on `HEADROOM` bytes in front of every received frame;
// PMDs leave RTE_PKTMBUF_HEADROOM there.
const _: () = assert!(ffi::RTE_PKTMBUF_HEADROOM as usize >= HEADROOM);

/// Data room of every mbuf: headroom plus the largest frame.
const DATA_ROOM: u16 = (MAX_FRAME + ffi::RTE_PKTMBUF_HEADROOM as usize) as u16;
/// rx/tx descriptors per queue before the pool-size and PMD limits apply.
const DEFAULT_DESC: u16 = 1024;

/// Errors of the DPDK backend. `Display` is meant for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpdkError {
    /// The configuration cannot be used with DPDK (no interfaces, ...).
    Config(String),
    /// `eal_args` rejected before calling EAL (an option that would make
    /// EAL exit the process, an embedded NUL, ...).
    EalArgs(String),
    /// `rte_eal_init` failed.
    EalInit { errno: i32, args: Vec<String> },
    /// EAL was already initialised (or cleaned up) in this process: DPDK
    /// supports one initialisation per process.
    EalUsed,
    /// The EAL is not running (e.g. [`register_thread`] before `open`).
    EalNotRunning,
    /// A device could not be found, configured or started.
    Device { device: String, reason: String },
    /// `rte_thread_register` failed.
    Thread { errno: i32 },
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpdkError::Config(m) => write!(f, "dpdk backend: {m}"),
            DpdkError::EalArgs(m) => write!(f, "bad eal_args: {m}"),
            DpdkError::EalInit { errno, args } => write!(
                f,
                "EAL init failed: {} (check eal_args; EAL was called with {:?} and its log above names the problem)",
                rte_strerror(*errno),
                args
            ),
            DpdkError::EalUsed => {
                write!(f, "EAL was already initialised in this process (DPDK allows one rte_eal_init per process)")
            }
            DpdkError::EalNotRunning => write!(f, "EAL is not running (open the DPDK backend first)"),
            DpdkError::Device { device, reason } => write!(f, "device {device}: {reason}"),
            DpdkError::Thread { errno } => {
                write!(f, "rte_thread_register failed: {} (all lcore ids taken?)", rte_strerror(*errno))
            }
        }
    }
}

impl std::error::Error for DpdkError {}

fn rte_strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a
    // NUL-terminated static or thread-local string, copied out at once.
    unsafe { CStr::from_ptr(ffi::rte_strerror(errno)) }.to_string_lossy().into_owned()
}

fn last_errno() -> i32 {
    // SAFETY: reads this thread's rte_errno; no preconditions.
    unsafe { ffi::ferrovs_rte_errno() }
}

/// Negative return codes of ethdev calls are `-errno`.
fn check(device: &str, what: &str, rc: c_int) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(DpdkError::Device { device: device.into(), reason: format!("{what} failed: {}", rte_strerror(-rc)) })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// EAL lifetime

#[derive(Clone, Copy, PartialEq, Eq)]
enum EalState {
    Fresh,
    Running,
    Done,
}

static EAL_STATE: Mutex<EalState> = Mutex::new(EalState::Fresh);
/// True between a successful rte_eal_init and rte_eal_cleanup. Mbuf::drop
/// reads it (relaxed: a plain load of a read-mostly line) so that an mbuf
/// dropped after cleanup is leaked instead of written into unmapped memory.
static EAL_ALIVE: AtomicBool = AtomicBool::new(false);

/// Is `dev` (the part before any comma) a PCI address `[DDDD:]BB:DD.F`?
fn pci_name(dev: &str) -> Option<String> {
    let name = dev.split(',').next().unwrap_or("");
    let parts: Vec<&str> = name.split(':').collect();
    let (dom, bus, rest) = match parts.as_slice() {
        [b, r] => ("0000", *b, *r),
        [d, b, r] => (*d, *b, *r),
        _ => return None,
    };
    let (devno, func) = rest.split_once('.')?;
    let hex = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(dom, 8) && hex(bus, 2) && hex(devno, 2) && hex(func, 1)) {
        return None;
    }
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        u32::from_str_radix(dom, 16).ok()?,
        u8::from_str_radix(bus, 16).ok()?,
        u8::from_str_radix(devno, 16).ok()?,
        u8::from_str_radix(func, 16).ok()?
    ))
}

fn is_vdev(dev: &str) -> bool {
    dev.starts_with("net_")
}

/// Does the user's eal_args choose the lcores?
fn has_lcore_option(args: &[String]) -> bool {
    args.iter().any(|a| {
        a == "-l"
            || a == "-c"
            || a == "--lcores"
            || a.starts_with("--lcores=")
            || (a.starts_with("-l") && !a.starts_with("--") && a.len() > 2)
            || (a.starts_with("-c") && !a.starts_with("--") && a.len() > 2)
    })
}

/// The argv for rte_eal_init (argv[0] included) and whether ferrovs chose
/// the main lcore itself. Checked here: options that make EAL terminate the
/// process instead of returning an error.
fn eal_argv(cfg: &ferrovs_cfg::Config, main_cpu: usize) -> Result<(Vec<String>, bool), DpdkError> {
    let user = &cfg.engine.eal_args;
    for (i, a) in user.iter().enumerate() {
        let prev = if i > 0 { user[i - 1].as_str() } else { "" };
        if a == "--log-level=help" || (prev == "--log-level" && a == "help") {
            return Err(DpdkError::EalArgs(
                "`--log-level=help` makes EAL list log types and exit the process; remove it".into(),
            ));
        }
        if a.contains('\0') {
            return Err(DpdkError::EalArgs(format!("{a:?} contains a NUL byte")));
        }
        if a == "-h" || a == "--help" || a.starts_with("--help=") {
            return Err(DpdkError::EalArgs(format!("`{a}` makes EAL print its usage and exit the process; remove it")));
        }
        if a == "--" {
            return Err(DpdkError::EalArgs(
                "`--` ends the EAL options; ferrovs has no application options after it".into(),
            ));
        }
        if a.starts_with("--proc-type") {
            return Err(DpdkError::EalArgs("ferrovs runs as a DPDK primary process only".into()));
        }
    }
    let mut argv = vec!["ferrovs".to_string()];
    argv.extend(user.iter().cloned());
    let choose_lcore = !has_lcore_option(user);
    if choose_lcore {
        argv.push("-l".into());
        argv.push(main_cpu.to_string());
    }
    for iface in &cfg.interfaces {
        let dev = iface.device.trim();
        if is_vdev(dev) {
            argv.push(format!("--vdev={dev}"));
        } else if pci_name(dev).is_some() {
            argv.push("-a".into());
            argv.push(dev.to_string());
        } else {
            return Err(DpdkError::Device {
                device: iface.device.clone(),
                reason: "not a DPDK device: expected a vdev spec (net_af_packet0,iface=eth1) or a PCI \
                         address (0000:01:00.0)"
                    .into(),
            });
        }
    }
    // Exception paths to the kernel: opened after every interface (see `kernel_queues`).
    for iface in &cfg.interfaces {
        if let Some(k) = &iface.kernel_port {
            let dev = k.trim();
            if !is_vdev(dev) {
                return Err(DpdkError::Device {
                    device: k.clone(),
                    reason: "kernel_port must be a vdev spec: net_tap0,iface=NAME or a virtio-user port".into(),
                });
            }
            argv.push(format!("--vdev={dev}"));
        }
    }
    Ok((argv, choose_lcore))
}

/// The calling thread's CPU affinity.
fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data (all-zero is the empty set);
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

fn first_cpu(set: &libc::cpu_set_t) -> usize {
    // SAFETY: CPU_ISSET only reads the set; the index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, set) }).unwrap_or(0)
}

/// Initialise EAL with `argv`. Returns Err without touching EAL for the
/// states where DPDK would refuse anyway.
fn eal_init(argv: &[String], restore: Option<libc::cpu_set_t>) -> Result<(), DpdkError> {
    let mut state = EAL_STATE.lock().unwrap_or_else(|e| e.into_inner());
    if *state != EalState::Fresh {
        return Err(DpdkError::EalUsed);
    }
    // EAL may keep pointers into argv (and getopt permutes it): give it
    // strings that live for the rest of the process. This happens once.
    let cstrs: Vec<*mut c_char> =
        argv.iter().map(|a| CString::new(a.as_str()).expect("NUL checked in eal_argv").into_raw()).collect();
    let argv_ptrs: &'static mut [*mut c_char] = Box::leak(cstrs.into_boxed_slice());
    // SAFETY: argc matches the array, every element is a valid
    // NUL-terminated string leaked for 'static, and EAL_STATE (held) makes
    // this the only rte_eal_init call in flight. Options that would make EAL
    // exit the process were rejected by eal_argv.
    let rc = unsafe { ffi::rte_eal_init(argv_ptrs.len() as c_int, argv_ptrs.as_mut_ptr()) };
    if rc < 0 {
        let errno = last_errno();
        if errno == libc::EALREADY {
            *state = EalState::Running;
            return Err(DpdkError::EalUsed);
        }
        // Argument errors leave EAL re-initialisable (DPDK clears its
        // run-once flag); other failures make the next call return EALREADY.
        return Err(DpdkError::EalInit { errno, args: argv.to_vec() });
    }
    *state = EalState::Running;
    EAL_ALIVE.store(true, Ordering::Release);
    if let Some(set) = restore {
        // SAFETY: `set` was read by sched_getaffinity for this same thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    Ok(())
}

/// Register the calling thread with EAL so it gets an lcore id (and with it
/// the mempool's per-lcore cache). Call it once per worker thread, after
/// pinning the thread, before its first rx/tx/alloc. Idempotent; threads
/// that already have an lcore id (the EAL main thread) return Ok at once.
pub fn register_thread() -> Result<(), DpdkError> {
    if !EAL_ALIVE.load(Ordering::Acquire) {
        return Err(DpdkError::EalNotRunning);
    }
    // SAFETY: rte_lcore_id reads a thread-local; no preconditions.
    if unsafe { ffi::rte_lcore_id() } != lcore_id_any() {
        return Ok(());
    }
    // SAFETY: EAL is running (checked above); registering the calling
    // thread has no other precondition.
    if unsafe { ffi::rte_thread_register() } < 0 {
        return Err(DpdkError::Thread { errno: last_errno() });
    }
    Ok(())
}

/// Give the calling thread's lcore id back (a worker about to exit). A
/// no-op for unregistered threads and for EAL's own lcores.
pub fn unregister_thread() {
    if EAL_ALIVE.load(Ordering::Acquire) {
        // SAFETY: rte_thread_unregister releases the id only if the thread
        // registered it through rte_thread_register; otherwise no-op.
        unsafe { ffi::rte_thread_unregister() };
    }
}

/// The calling thread's lcore id, `None` if it has none.
pub fn lcore_id() -> Option<u32> {
    // SAFETY: reads a thread-local.
    let id = unsafe { ffi::rte_lcore_id() };
    (id != lcore_id_any()).then_some(id)
}

fn lcore_id_any() -> u32 {
    // SAFETY: returns a constant.
    unsafe { ffi::ferrovs_lcore_id_any() }
}

/// The linked DPDK's version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::ferrovs_rte_version()) }.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// Mbuf

/// An owned DPDK mbuf (single segment). Dropping it returns it to its pool;
/// transmitting it hands it to the PMD.
///
/// `repr(transparent)` over a non-null pointer: a `Vec<Mbuf>` is an array
/// of `struct rte_mbuf *`, which is what rx/tx burst read and write, so
/// bursts move pointers straight between the PMD and the pipeline.
///
/// Lifetime: an mbuf lives in EAL memory, which `rte_eal_cleanup` releases
/// when the backend and its last queue are dropped. Drop every packet
/// before that (a worker drops its bursts, handoff rings and flow-table
/// buffers before its queues). An `Mbuf` dropped later is leaked rather
/// than freed, but reading one then is a use after free.
#[repr(transparent)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

// SAFETY: an Mbuf is the unique owner of its mbuf (like a Box), so moving it
// to another thread moves the ownership with it. Freeing it there is sound:
// rte_pktmbuf_free puts it back through the pool's thread-safe mempool ops
// (ring_mp_mc), using a per-lcore cache only when the freeing thread has its
// own lcore id (EAL lcores and threads that called register_thread: each id
// belongs to one thread) and the shared ring otherwise.
unsafe impl Send for Mbuf {}
// SAFETY: shared references only read the buffer (data()), which no other
// owner can write while the Mbuf is alive.
unsafe impl Sync for Mbuf {}

impl Mbuf {
    #[inline]
    fn m(&self) -> &ffi::rte_mbuf {
        // SAFETY: the pointer is valid and uniquely owned while self lives.
        unsafe { self.0.as_ref() }
    }
    #[inline]
    fn m_mut(&mut self) -> &mut ffi::rte_mbuf {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { self.0.as_mut() }
    }
    /// The raw mbuf pointer (still owned by `self`).
    pub fn as_ptr(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
    }
    /// Give up ownership without freeing.
    pub fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid, single-segment mbuf that nothing else owns.
    pub unsafe fn from_raw(p: *mut ffi::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(p).map(Mbuf)
    }
    /// The port the mbuf was received on.
    pub fn port(&self) -> u16 {
        self.m().port
    }
    /// Offload flags set by the PMD (RTE_MBUF_F_RX_*).
    pub fn ol_flags(&self) -> u64 {
        self.m().ol_flags
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.m().data_off as usize
    }
}

impl Packet for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: a single-segment mbuf's data lies in its buffer at
        // buf_addr + data_off for data_len bytes (DPDK invariant, kept by
        // set_len/prepend/adj below); the bytes are ours while self lives.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in data(); &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize) }
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        let m = self.m_mut();
        // Single segment: the packet length is the segment length.
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        true
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > u16::MAX as usize {
            return false;
        }
        // SAFETY: the mbuf is valid and ours; rte_pktmbuf_prepend checks the
        // headroom and returns NULL (changing nothing) if n does not fit.
        !unsafe { ffi::rte_pktmbuf_prepend(self.0.as_ptr(), n as u16) }.is_null()
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > u16::MAX as usize {
            return false;
        }
        // SAFETY: as in prepend; rte_pktmbuf_adj returns NULL if n > data_len.
        !unsafe { ffi::rte_pktmbuf_adj(self.0.as_ptr(), n as u16) }.is_null()
    }
    #[inline]
    fn capacity(&self) -> usize {
        self.m().buf_len as usize - self.headroom()
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        if EAL_ALIVE.load(Ordering::Relaxed) {
            // SAFETY: we own the mbuf; after this call we never touch it.
            unsafe { ffi::rte_pktmbuf_free(self.0.as_ptr()) };
        }
        // Else EAL memory is gone (rte_eal_cleanup ran): leak, the process
        // is shutting down anyway.
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mbuf({} bytes, headroom {}, port {})", self.m().data_len, self.headroom(), self.m().port)
    }
}

// ---------------------------------------------------------------------------
// Ports, shared state, statistics

struct Port {
    name: String,
    device: String,
    id: u16,
    pool: NonNull<ffi::rte_mempool>,
    caps: PortCaps,
    driver: String,
    started: bool,
}

/// What every queue and the backend share; dropping the last reference
/// stops the ports and cleans up EAL.
struct Shared {
    ports: Vec<Port>,
    /// Serialises ethdev control calls (stats, link), which DPDK does not
    /// make thread-safe against each other.
    ctl: Mutex<()>,
}

// SAFETY: the raw pool pointers refer to mempools that live until
// Shared::drop; mempool operations are thread-safe (mp/mc ring ops), and
// the ethdev control calls made through &Shared are serialised by `ctl`.
unsafe impl Send for Shared {}
// SAFETY: see Send; no interior mutability besides `ctl`.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        for p in &self.ports {
            if p.started {
                // SAFETY: the port was started by open(); every queue of it
                // is gone (they hold this Arc), so no rx/tx is in flight.
                unsafe { ffi::rte_eth_dev_stop(p.id) };
            }
            // SAFETY: as above; closing releases the PMD's rx ring mbufs.
            unsafe { ffi::rte_eth_dev_close(p.id) };
        }
        EAL_ALIVE.store(false, Ordering::Release);
        for p in &self.ports {
            // SAFETY: the pool was created by open() and the port that
            // filled rx rings from it is closed.
            unsafe { ffi::rte_mempool_free(p.pool.as_ptr()) };
        }
        // SAFETY: called once (EAL_STATE goes to Done), after every DPDK
        // object we created is released.
        unsafe { ffi::rte_eal_cleanup() };
        *EAL_STATE.lock().unwrap_or_else(|e| e.into_inner()) = EalState::Done;
    }
}

/// Link state of a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
    pub autoneg: bool,
}

/// Counters of one queue (as far as the PMD keeps per-queue counters; only
/// the first 16 queues are reported by ethdev's basic stats).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub queue: u16,
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub errors: u64,
}

/// One extended statistic.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XStat {
    pub name: String,
    pub value: u64,
}

/// Counters of one port, from `rte_eth_stats_get` and the PMD's xstats.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    pub name: String,
    pub device: String,
    pub port_id: u16,
    pub driver: String,
    pub link: LinkStatus,
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Dropped by the NIC because rx queues were full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// rx failed for lack of mbufs in the pool.
    pub rx_nombuf: u64,
    pub queues: Vec<QueueStats>,
    /// Extended statistics, as the PMD names them.
    pub xstats: Vec<XStat>,
    /// Mbufs currently free in this port's pool.
    pub pool_free: u32,
}

/// `p` as the control plane reports a port (`ferrovsadm ports`, the metrics).
pub fn report_of(p: &PortStats) -> super::PortReport {
    super::PortReport {
        name: p.name.clone(),
        device: p.device.clone(),
        driver: p.driver.clone(),
        link_up: Some(p.link.up),
        counters: super::PortCounters {
            rx_packets: p.ipackets,
            rx_bytes: p.ibytes,
            rx_dropped: p.imissed,
            rx_nobuf: p.rx_nombuf,
            rx_errors: p.ierrors,
            tx_packets: p.opackets,
            tx_bytes: p.obytes,
            // What a full transmit queue refused the workers count (drop reason
            // `tx_full`); the port's own figure is its errors.
            tx_dropped: 0,
            tx_errors: p.oerrors,
            // AF_PACKET's own: DPDK's drivers hand over frames as the wire carried them.
            ..Default::default()
        },
        queues: p
            .queues
            .iter()
            .map(|q| super::PortCounters {
                rx_packets: q.ipackets,
                rx_bytes: q.ibytes,
                // "Packets received on the queue that were dropped."
                rx_dropped: q.errors,
                tx_packets: q.opackets,
                tx_bytes: q.obytes,
                ..Default::default()
            })
            .collect(),
    }
}

fn link_of(port: u16) -> LinkStatus {
    // SAFETY: rte_eth_link is plain data; link_get_nowait fills it for a
    // valid port and does not block.
    let mut l: ffi::rte_eth_link = unsafe { std::mem::zeroed() };
    if unsafe { ffi::rte_eth_link_get_nowait(port, &mut l) } < 0 {
        return LinkStatus::default();
    }
    LinkStatus {
        up: l.link_status() != 0,
        speed_mbps: l.link_speed,
        full_duplex: l.link_duplex() as u32 == ffi::RTE_ETH_LINK_FULL_DUPLEX,
        autoneg: l.link_autoneg() != 0,
    }
}

impl Shared {
    fn stats(&self) -> Vec<PortStats> {
        let _g = self.ctl.lock().unwrap_or_else(|e| e.into_inner());
        self.ports.iter().map(|p| self.port_stats(p)).collect()
    }

    fn port_stats(&self, p: &Port) -> PortStats {
        // SAFETY: plain-data struct filled by rte_eth_stats_get for a valid
        // port id; calls are serialised by `ctl`.
        let mut s: ffi::rte_eth_stats = unsafe { std::mem::zeroed() };
        let ok = unsafe { ffi::rte_eth_stats_get(p.id, &mut s) } == 0;
        let nq = (p.caps.queues as usize).min(ffi::RTE_ETHDEV_QUEUE_STAT_CNTRS as usize);
        let queues = if ok {
            (0..nq)
                .map(|q| QueueStats {
                    queue: q as u16,
                    ipackets: s.q_ipackets[q],
                    opackets: s.q_opackets[q],
                    ibytes: s.q_ibytes[q],
                    obytes: s.q_obytes[q],
                    errors: s.q_errors[q],
                })
                .collect()
        } else {
            Vec::new()
        };
        PortStats {
            name: p.name.clone(),
            device: p.device.clone(),
            port_id: p.id,
            driver: p.driver.clone(),
            link: link_of(p.id),
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            queues,
            xstats: xstats(p.id),
            // SAFETY: the pool is alive while Shared is.
            pool_free: unsafe { ffi::rte_mempool_avail_count(p.pool.as_ptr()) },
        }
    }
}

fn xstats(port: u16) -> Vec<XStat> {
    // SAFETY: with a NULL array and size 0 the call only returns the count.
    let n = unsafe { ffi::rte_eth_xstats_get_names(port, std::ptr::null_mut(), 0) };
    if n <= 0 {
        return Vec::new();
    }
    let n = n as usize;
    let mut names = vec![ffi::rte_eth_xstat_name::default(); n];
    let mut vals = vec![ffi::rte_eth_xstat::default(); n];
    // SAFETY: both arrays hold `n` elements, the size passed in; DPDK
    // writes at most that many and returns how many it wrote (or the
    // needed size if the count grew meanwhile, which we then reject).
    let got_n = unsafe { ffi::rte_eth_xstats_get_names(port, names.as_mut_ptr(), n as u32) };
    let got_v = unsafe { ffi::rte_eth_xstats_get(port, vals.as_mut_ptr(), n as u32) };
    if got_n < 0 || got_v < 0 || got_n as usize > n || got_v as usize > n {
        return Vec::new();
    }
    vals[..got_v as usize]
        .iter()
        .filter_map(|v| {
            let name = names.get(v.id as usize)?;
            // SAFETY: DPDK NUL-terminates names within the 64-byte array
            // (snprintf); the array was zeroed, so a terminator exists.
            let s = unsafe { CStr::from_ptr(name.name.as_ptr()) }.to_string_lossy().into_owned();
            Some(XStat { name: s, value: v.value })
        })
        .collect()
}

/// A cloneable, thread-safe handle for reading port statistics (for the
/// control plane), valid as long as it is held.
#[derive(Clone)]
pub struct DpdkStats(Arc<Shared>);

impl DpdkStats {
    pub fn get(&self) -> Vec<PortStats> {
        self.0.stats()
    }
}

// ---------------------------------------------------------------------------
// Queues

/// One worker's rx/tx queue pair of one port.
pub struct DpdkQueue {
    port: u16,
    queue: u16,
    pool: NonNull<ffi::rte_mempool>,
    caps: PortCaps,
    /// Chained (multi-segment) frames that could not be linearised.
    rx_chained_dropped: u64,
    shared: Arc<Shared>,
}

// SAFETY: a queue is used by one thread at a time (PortQueue takes &mut
// self; DpdkQueue is not Sync), which is all DPDK asks of rx/tx queues;
// the pool pointer is valid while `shared` is held and mempool ops are
// thread-safe.
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    pub fn port_id(&self) -> u16 {
        self.port
    }
    /// Received chained frames dropped because they could not be made into
    /// one segment (should stay 0: the data room holds a full frame).
    pub fn rx_chained_dropped(&self) -> u64 {
        self.rx_chained_dropped
    }
    /// A statistics handle for the backend this queue belongs to.
    pub fn stats_handle(&self) -> DpdkStats {
        DpdkStats(self.shared.clone())
    }

    /// Slow path: make every received frame from `from` on a single segment.
    #[cold]
    fn linearize_from(&mut self, out: &mut Vec<Mbuf>, from: usize) {
        let mut i = from;
        while i < out.len() {
            if out[i].m().nb_segs > 1 {
                // SAFETY: the mbuf is ours; linearize copies the chain into
                // the first segment if it fits, or fails changing nothing.
                if unsafe { ffi::rte_pktmbuf_linearize(out[i].as_ptr()) } != 0 {
                    drop(out.remove(i));
                    self.rx_chained_dropped += 1;
                    continue;
                }
            }
            i += 1;
        }
    }
}

/// A queue's mempool without the queue: the worker's core allocates the frames it
/// originates from it.
pub struct MbufAlloc {
    pool: NonNull<ffi::rte_mempool>,
    _shared: Arc<Shared>,
}

// SAFETY: the pool pointer is valid while `_shared` is held, and mempool
// get/put are thread-safe (multi-producer/consumer rings), so the allocator
// may move to the worker's thread.
unsafe impl Send for MbufAlloc {}

impl super::BufAlloc for MbufAlloc {
    type Buf = Mbuf;
    #[inline]
    fn alloc(&mut self) -> Option<Mbuf> {
        // SAFETY: the pool lives while `_shared` is held; the returned mbuf
        // (if any) is reset (one segment, len 0, default headroom) and ours.
        NonNull::new(unsafe { ffi::rte_pktmbuf_alloc(self.pool.as_ptr()) }).map(Mbuf)
    }
}

impl PortQueue for DpdkQueue {
    type Buf = Mbuf;
    type Alloc = MbufAlloc;

    #[inline]
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>) -> usize {
        let have = out.len();
        if have >= BURST {
            return 0;
        }
        let want = BURST - have;
        out.reserve(want);
        // SAFETY: `out` has room for `want` more elements after `have`;
        // Mbuf is repr(transparent) over a non-null rte_mbuf pointer, and
        // the PMD writes `n <= want` valid, non-null mbuf pointers whose
        // ownership passes to us. This thread alone polls (port, queue).
        let n = unsafe {
            ffi::rte_eth_rx_burst(
                self.port,
                self.queue,
                out.as_mut_ptr().add(have) as *mut *mut ffi::rte_mbuf,
                want as u16,
            )
        } as usize;
        // SAFETY: the first have + n elements are initialised (see above).
        unsafe { out.set_len(have + n) };
        if out[have..].iter().any(|m| m.m().nb_segs > 1) {
            self.linearize_from(out, have);
        }
        out.len() - have
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> TxResult {
        let total = pkts.len();
        if total == 0 {
            return TxResult::default();
        }
        // Bytes must be read before the PMD owns (and may free) the mbufs.
        let bytes_all: u64 = pkts.iter().map(|m| m.m().pkt_len as u64).sum();
        let mut sent = 0usize;
        // One retry: a PMD may accept part of a burst when its ring wraps.
        for _ in 0..2 {
            let left = (total - sent).min(u16::MAX as usize);
            // SAFETY: elements sent..sent+left are valid owned mbufs laid out
            // as `struct rte_mbuf *` (repr(transparent)); the PMD takes
            // ownership of the first `k` it returns and leaves the rest.
            let k = unsafe {
                ffi::rte_eth_tx_burst(
                    self.port,
                    self.queue,
                    pkts.as_mut_ptr().add(sent) as *mut *mut ffi::rte_mbuf,
                    left as u16,
                )
            } as usize;
            sent += k;
            if sent == total || k == 0 {
                break;
            }
        }
        let unsent_bytes: u64 = pkts[sent..].iter().map(|m| m.m().pkt_len as u64).sum();
        // Free the ones the PMD did not take...
        pkts.truncate(sent);
        // SAFETY: ...and forget the ones it took: they belong to the PMD now
        // and must not be dropped (freed) by us.
        unsafe { pkts.set_len(0) };
        TxResult { sent, bytes: bytes_all - unsent_bytes, dropped: total - sent }
    }

    #[inline]
    fn alloc(&mut self) -> Option<Mbuf> {
        // SAFETY: the pool lives while `shared` is held; the returned mbuf
        // (if any) is reset (one segment, len 0, default headroom) and ours.
        NonNull::new(unsafe { ffi::rte_pktmbuf_alloc(self.pool.as_ptr()) }).map(Mbuf)
    }

    fn allocator(&self) -> MbufAlloc {
        MbufAlloc { pool: self.pool, _shared: self.shared.clone() }
    }

    fn caps(&self) -> &PortCaps {
        &self.caps
    }
}

// ---------------------------------------------------------------------------
// Backend

/// Every configured interface as a started DPDK port.
pub struct DpdkBackend {
    shared: Arc<Shared>,
    queues: Vec<Vec<DpdkQueue>>,
}

impl DpdkBackend {
    /// The queues, once: `[w][i]` is worker `w`'s queue of interface `i`.
    pub fn take_queues(&mut self) -> Vec<Vec<DpdkQueue>> {
        std::mem::take(&mut self.queues)
    }

    /// Initialise EAL from `cfg.engine.eal_args`, then open, configure and
    /// start every interface with `cfg.engine.workers` queue pairs.
    ///
    /// EAL can be initialised once per process: a second `open` (even after
    /// the first backend was dropped) returns [`DpdkError::EalUsed`]. If
    /// EAL came up but a device failed, EAL is cleaned up before returning.
    pub fn open(cfg: &ferrovs_cfg::Config) -> Result<DpdkBackend, DpdkError> {
        let workers = cfg.engine.workers;
        if cfg.interfaces.is_empty() {
            return Err(DpdkError::Config("no interfaces configured".into()));
        }
        if workers == 0 || workers > u16::MAX as usize {
            return Err(DpdkError::Config(format!("bad worker count {workers}")));
        }
        let affinity = current_affinity();
        let main_cpu = affinity.as_ref().map(first_cpu).unwrap_or(0);
        let (argv, chose_lcore) = eal_argv(cfg, main_cpu)?;
        tracing::info!(dpdk = %version(), ?argv, "initialising DPDK EAL");
        eal_init(&argv, if chose_lcore { affinity } else { None })?;

        // From here on, dropping `shared` (on any error) closes what was
        // opened and cleans up EAL.
        let mut shared = Shared { ports: Vec::new(), ctl: Mutex::new(()) };
        for iface in &cfg.interfaces {
            let port = open_port(cfg, iface, workers as u16)?;
            shared.ports.push(port);
            let p = shared.ports.last_mut().unwrap();
            start_port(p, iface.mac)?;
        }
        // Kernel ports last, in interface order (`snapshot::kernel_queues`), each with its
        // data port's MAC: the kernel then answers ARP/ND with the address the wire knows
        // and accepts the unicast frames passed to it.
        let n = shared.ports.len();
        for (i, iface) in cfg.interfaces.iter().enumerate() {
            let Some(k) = &iface.kernel_port else { continue };
            let kif = ferrovs_cfg::model::Interface {
                name: format!("{}.kernel", iface.name),
                device: k.clone(),
                mac: None,
                addresses: Vec::new(),
                kernel_port: None,
            };
            let mac = shared.ports[i].caps.mac;
            let port = open_port(cfg, &kif, workers as u16)?;
            shared.ports.push(port);
            let p = shared.ports.last_mut().unwrap();
            start_port(p, Some(mac))?;
            tracing::info!(interface = %iface.name, kernel_port = %k, "exception path to the kernel");
        }
        debug_assert_eq!(shared.ports.len(), n + cfg.interfaces.iter().filter(|i| i.kernel_port.is_some()).count());
        let shared = Arc::new(shared);
        let queues = (0..workers as u16)
            .map(|q| {
                shared
                    .ports
                    .iter()
                    .map(|p| DpdkQueue {
                        port: p.id,
                        queue: q,
                        pool: p.pool,
                        caps: p.caps.clone(),
                        rx_chained_dropped: 0,
                        shared: shared.clone(),
                    })
                    .collect()
            })
            .collect();
        Ok(DpdkBackend { shared, queues })
    }

    /// Current statistics of every port, in interface order.
    pub fn stats(&self) -> Vec<PortStats> {
        self.shared.stats()
    }

    /// A handle for reading statistics from another thread.
    pub fn stats_handle(&self) -> DpdkStats {
        DpdkStats(self.shared.clone())
    }

    /// Capabilities of every port, in interface order.
    pub fn caps(&self) -> Vec<PortCaps> {
        self.shared.ports.iter().map(|p| p.caps.clone()).collect()
    }
}

/// Find the ethdev port EAL created for `device`.
fn find_port(device: &str) -> Option<u16> {
    let name = device.split(',').next().unwrap_or("").trim();
    let mut candidates = vec![name.to_string()];
    if let Some(pci) = pci_name(device) {
        candidates.push(pci);
    }
    for c in candidates {
        let Ok(cname) = CString::new(c) else { continue };
        let mut id = 0u16;
        // SAFETY: cname is a valid C string; id is written on success only.
        if unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) } == 0 {
            return Some(id);
        }
    }
    None
}

/// Create the pool, configure the port and set up its queues (not started).
fn open_port(cfg: &ferrovs_cfg::Config, iface: &ferrovs_cfg::model::Interface, nq: u16) -> Result<Port, DpdkError> {
    let dev = iface.device.trim();
    let err = |reason: String| DpdkError::Device { device: iface.device.clone(), reason };
    let id = find_port(dev).ok_or_else(|| {
        err("probe failed: EAL created no port for it (wrong iface/PCI address, device not bound \
                            to a DPDK driver, or PMD missing; see the EAL log above)"
            .into())
    })?;

    // SAFETY: plain-data struct, filled by rte_eth_dev_info_get for a valid port.
    let mut info: ffi::rte_eth_dev_info = unsafe { std::mem::zeroed() };
    check(dev, "rte_eth_dev_info_get", unsafe { ffi::rte_eth_dev_info_get(id, &mut info) })?;
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: driver_name is a static NUL-terminated string of the PMD.
        unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
    };
    if info.max_rx_queues < nq || info.max_tx_queues < nq {
        return Err(err(format!(
            "{driver} supports {} rx / {} tx queues, {nq} workers need {nq} of each \
             (for net_af_packet add qpairs={nq} to the device spec)",
            info.max_rx_queues, info.max_tx_queues
        )));
    }

    // SAFETY: rte_eth_conf is plain data; all-zero is DPDK's default
    // configuration (no offloads, no RSS, MTU from the driver).
    let mut conf: ffi::rte_eth_conf = unsafe { std::mem::zeroed() };
    // SAFETY: returns a constant.
    let want_rss = unsafe { ffi::ferrovs_rss_ip_tcp_udp() };
    let rss = info.flow_type_rss_offloads & want_rss;
    if nq > 1 && rss != 0 {
        conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss;
    } else if nq > 1 {
        tracing::warn!(device = dev, driver, "no RSS hash types: the PMD spreads flows its own way");
    }
    // SAFETY: valid port, not started; conf lives across the call.
    check(dev, "rte_eth_dev_configure", unsafe { ffi::rte_eth_dev_configure(id, nq, nq, &conf) })?;

    let mbufs = cfg.engine.mbufs.max(64);
    let mut nb_desc = DEFAULT_DESC;
    // Keep the rx+tx rings of all queues within half the pool.
    while nb_desc > 64 && 2 * nq as u64 * nb_desc as u64 > mbufs as u64 / 2 {
        nb_desc /= 2;
    }
    let (mut nb_rxd, mut nb_txd) = (nb_desc, nb_desc);
    // SAFETY: valid port; the two u16s are read and written in place.
    check(dev, "rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
        ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rxd, &mut nb_txd)
    })?;

    // SAFETY: valid port id.
    let socket = unsafe { ffi::rte_eth_dev_socket_id(id) };
    let socket = if socket < 0 { ffi::SOCKET_ID_ANY } else { socket };
    // Per-lcore cache: at most 256, and small enough that the caches of all
    // workers cannot hold most of the pool (mempool needs cache*1.5 <= n).
    let cache = (mbufs / (4 * (nq as u32 + 1))).min(256);
    let pool_name = CString::new(format!("fvs_mp_{id}")).unwrap();
    let packed = driver == "net_af_xdp";
    let pool = create_pool(&pool_name, mbufs, cache, socket, packed).ok_or_else(|| {
        err(format!(
            "cannot create a pool of {mbufs} mbufs: {} (lower engine.mbufs or give EAL more memory, -m / hugepages)",
            rte_strerror(last_errno())
        ))
    })?;
    if packed {
        if let Err(reason) = umem_covers_pool(pool) {
            // SAFETY: the pool was just created and nothing uses it.
            unsafe { ffi::rte_mempool_free(pool.as_ptr()) };
            return Err(err(reason));
        }
    }
    // From here a failure must release the port and the pool (the port is
    // not in Shared yet, so nothing else will).
    let fail = |e: DpdkError| {
        // SAFETY: the port is configured but not started; closing it drops
        // its references to the pool, which no queue or mbuf uses yet.
        unsafe {
            ffi::rte_eth_dev_close(id);
            ffi::rte_mempool_free(pool.as_ptr());
        }
        e
    };

    for q in 0..nq {
        // SAFETY: valid port, configured with nq queues; NULL conf selects
        // the PMD's defaults; the pool outlives the port (freed after close).
        let rc = unsafe { ffi::rte_eth_rx_queue_setup(id, q, nb_rxd, socket as u32, std::ptr::null(), pool.as_ptr()) };
        check(dev, &format!("rx queue {q} setup ({nb_rxd} descriptors)"), rc).map_err(fail)?;
        // SAFETY: as above.
        let rc = unsafe { ffi::rte_eth_tx_queue_setup(id, q, nb_txd, socket as u32, std::ptr::null()) };
        check(dev, &format!("tx queue {q} setup ({nb_txd} descriptors)"), rc).map_err(fail)?;
    }

    let mut mtu = 1500u16;
    // SAFETY: valid port; mtu is written on success only.
    unsafe { ffi::rte_eth_dev_get_mtu(id, &mut mtu) };
    let caps = PortCaps { name: iface.name.clone(), mac: [0; 6], queues: nq, mtu: mtu.min((MAX_FRAME - 22) as u16) };
    tracing::info!(
        device = dev,
        port = id,
        driver,
        nq,
        nb_rxd,
        nb_txd,
        mbufs,
        cache,
        rss = format!("{rss:#x}"),
        "port configured"
    );
    Ok(Port { name: iface.name.clone(), device: iface.device.clone(), id, pool, caps, driver, started: false })
}

/// The port's mbuf pool. `packed`: objects laid end to end, allowed to cross
/// page boundaries (`RTE_MEMPOOL_F_NO_IOVA_CONTIG`), as the af_xdp PMD needs.
/// DPDK 22.11's af_xdp PMD registers the pool's memory as the socket's UMEM
/// from the first memory chunk for `populated_size * object size` bytes. A
/// pool made by `rte_pktmbuf_pool_create` keeps each object within a page,
/// and without hugepages a 2,368-byte object takes a whole 4 KiB page: the
/// UMEM then covers only the first 58 % of the pool. Mbufs beyond it make
/// invalid TX descriptors (their frames vanish) and invalid fill-ring entries,
/// which the kernel discards, so the port's fill ring drains each time one
/// comes round until it receives nothing at all (a SYN flood pulled enough of
/// the pool into use on the lab's inside port that it went deaf for good).
fn create_pool(name: &CStr, mbufs: u32, cache: u32, socket: c_int, packed: bool) -> Option<NonNull<ffi::rte_mempool>> {
    if !packed {
        // SAFETY: valid name; DPDK copies it. Returns NULL with rte_errno set.
        return NonNull::new(unsafe {
            ffi::rte_pktmbuf_pool_create(name.as_ptr(), mbufs, cache, 0, DATA_ROOM, socket)
        });
    }
    // What rte_pktmbuf_pool_create does, with the flag it does not take.
    let mut private = ffi::rte_pktmbuf_pool_private { mbuf_data_room_size: DATA_ROOM, mbuf_priv_size: 0, flags: 0 };
    let elt = (std::mem::size_of::<ffi::rte_mbuf>() + DATA_ROOM as usize) as u32;
    // SAFETY: valid name (copied); rte_pktmbuf_pool_init reads `private`
    // during this call only, and rte_pktmbuf_init initialises each object.
    NonNull::new(unsafe {
        ffi::rte_mempool_create(
            name.as_ptr(),
            mbufs,
            elt,
            cache,
            std::mem::size_of::<ffi::rte_pktmbuf_pool_private>() as u32,
            Some(ffi::rte_pktmbuf_pool_init),
            &mut private as *mut _ as *mut std::ffi::c_void,
            Some(ffi::rte_pktmbuf_init),
            std::ptr::null_mut(),
            socket,
            ffi::RTE_MEMPOOL_F_NO_IOVA_CONTIG,
        )
    })
}

/// Does the UMEM the af_xdp PMD registers for `pool` hold every mbuf of it?
/// The PMD's reckoning: from the first memory chunk's address rounded down to
/// a page, `populated_size * (header + element + trailer)` bytes plus that
/// rounding. An error names what does not fit (several memory chunks, objects
/// spread out), so the port fails at start-up rather than going deaf later.
fn umem_covers_pool(pool: NonNull<ffi::rte_mempool>) -> Result<(), String> {
    #[derive(Default)]
    struct Span {
        chunks: u32,
        first: usize,
        end: usize,
    }
    unsafe extern "C" fn chunk(
        _mp: *mut ffi::rte_mempool,
        opaque: *mut std::ffi::c_void,
        hdr: *mut ffi::rte_mempool_memhdr,
        _idx: u32,
    ) {
        // SAFETY: opaque is the &mut Span passed below; hdr is the pool's.
        let (s, hdr) = unsafe { (&mut *(opaque as *mut Span), &*hdr) };
        if s.chunks == 0 {
            s.first = hdr.addr as usize;
        }
        s.chunks += 1;
    }
    unsafe extern "C" fn object(
        mp: *mut ffi::rte_mempool,
        opaque: *mut std::ffi::c_void,
        obj: *mut std::ffi::c_void,
        _i: u32,
    ) {
        // SAFETY: opaque is the &mut Span passed below; mp is the pool.
        let (s, mp) = unsafe { (&mut *(opaque as *mut Span), &*mp) };
        s.end = s.end.max(obj as usize + (mp.elt_size + mp.trailer_size) as usize);
    }
    let mut s = Span::default();
    let arg = &mut s as *mut Span as *mut std::ffi::c_void;
    // SAFETY: a valid, populated pool; the callbacks run during the calls and
    // only write to `s`.
    unsafe {
        ffi::rte_mempool_mem_iter(pool.as_ptr(), Some(chunk), arg);
        ffi::rte_mempool_obj_iter(pool.as_ptr(), Some(object), arg);
    }
    // SAFETY: valid pool; plain fields.
    let mp = unsafe { pool.as_ref() };
    let page = 4096usize;
    let base = s.first & !(page - 1);
    let obj = (mp.header_size + mp.elt_size + mp.trailer_size) as usize;
    let umem = mp.populated_size as usize * obj + (s.first - base);
    if s.chunks != 1 || s.end > base + umem {
        return Err(format!(
            "the af_xdp PMD would register {umem} bytes of the mbuf pool as its UMEM, but the pool's {} mbufs \
             span {} bytes in {} memory chunk(s): mbufs outside it would be lost (give EAL more contiguous \
             memory, -m / hugepages, or fewer engine.mbufs)",
            mp.populated_size,
            s.end.saturating_sub(base),
            s.chunks
        ));
    }
    Ok(())
}

/// MAC address, start, promiscuous mode.
fn start_port(p: &mut Port, mac: Option<[u8; 6]>) -> Result<(), DpdkError> {
    let dev = p.device.clone();
    if let Some(mac) = mac {
        let mut a = ffi::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port; the address is read during the call.
        let rc = unsafe { ffi::rte_eth_dev_default_mac_addr_set(p.id, &mut a) };
        if rc < 0 {
            // Promiscuous mode (below) still delivers frames for it.
            tracing::warn!(device = %dev, "cannot set MAC address: {}; using it anyway", rte_strerror(-rc));
        }
        p.caps.mac = mac;
    } else {
        let mut a = ffi::rte_ether_addr::default();
        // SAFETY: valid port; writes 6 bytes into `a`.
        check(&dev, "rte_eth_macaddr_get", unsafe { ffi::rte_eth_macaddr_get(p.id, &mut a) })?;
        p.caps.mac = a.addr_bytes;
    }
    // SAFETY: valid, configured port with all queues set up.
    check(&dev, "rte_eth_dev_start", unsafe { ffi::rte_eth_dev_start(p.id) })?;
    p.started = true;
    // SAFETY: valid, started port.
    let rc = unsafe { ffi::rte_eth_promiscuous_enable(p.id) };
    if rc < 0 {
        tracing::warn!(device = %dev, "cannot enable promiscuous mode: {}", rte_strerror(-rc));
    }
    let link = link_of(p.id);
    tracing::info!(device = %dev, port = p.id, up = link.up, speed_mbps = link.speed_mbps, mac = ?p.caps.mac, "port started");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_names() {
        assert_eq!(pci_name("0000:01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(pci_name("01:00.1").as_deref(), Some("0000:01:00.1"));
        assert_eq!(pci_name("0000:AF:00.0,rxq_cqe_comp_en=0").as_deref(), Some("0000:af:00.0"));
        assert_eq!(pci_name("net_ring0"), None);
        assert_eq!(pci_name("eth0"), None);
        assert_eq!(pci_name("01:00"), None);
    }

    #[test]
    fn lcore_options() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(has_lcore_option(&v(&["-l", "0-1"])));
        assert!(has_lcore_option(&v(&["-l0"])));
        assert!(has_lcore_option(&v(&["--lcores=0@0"])));
        assert!(has_lcore_option(&v(&["-c", "0x3"])));
        assert!(!has_lcore_option(&v(&["--no-huge", "--log-level=8"])));
    }
}
