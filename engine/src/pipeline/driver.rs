//! The poll-mode driver around a worker's sans-IO core ([`Worker`]).
//!
//! The core takes frames and time and gives back verdicts and frames: `handle(now, iface,
//! frame) -> Verdict` for one frame, `handle_burst` for a received burst (the established fast
//! path's three passes), `poll_transmit` / `transmit_queues` for frames to send (forwarded,
//! reflected, originated: ARP/ND, ICMP errors, SYN-ACKs, RSTs; released: parked packets once
//! their next hop resolves, SYN-proxy holds),
//! `poll_handoff` for packets another worker owns, `poll_timeout` / `handle_timeout` for
//! timers (real deadlines: the driver may sleep until one), and `poll_event` for what it has
//! for the rest of the engine (a neighbour learnt, a cluster sync batch, new per-service
//! counters). It owns no port, no rx burst, reads no ring and writes nothing shared but its
//! counters ([`CoreEnv`](crate::pipeline::worker::CoreEnv)), so tests and fuzz targets drive it directly
//! (`engine/tests/core.rs`).
//!
//! [`Driver`] owns what does I/O: one queue of every port, the rx burst, the kernel-port
//! passthrough (frames from a kernel port leave through its data port as sent), this worker's
//! handoff and control rings; it pushes the core's handoffs into their owners' rings and
//! delivers its events ([`Fabric::deliver`]: neighbours into the other workers' control
//! rings, sync batches into the sync thread's ring, service counters into their mutex). It
//! keeps the core's next deadline ([`Driver::timeout`]) and calls `handle_timeout` only when
//! it is due.
//!
//! Frames the core originates are allocated from a [`BufAlloc`](crate::port::BufAlloc) per port, taken from the queue
//! at construction ([`PortQueue::allocator`]: the port's packet pool without the queue). That
//! costs nothing on the forwarding path, where the core works in the received buffer, and an
//! originated frame is written once into a port buffer (building it in core-owned memory
//! instead would add a copy per ARP reply, SYN-ACK or ICMP error, which a SYN flood pays per
//! packet). Likewise the core's per-interface transmit queues are handed to the ports'
//! `tx_burst` in place, so a forwarded packet is pushed once and never moved again: the split
//! costs the fast path nothing.
//!
//! What the core knows of a port (MTU, MAC: [`PortCaps`]) it gets at construction and again
//! with each snapshot (and from [`Driver::refresh_caps`]).
//!
//! The driver dereferences to its core, so the core's accessors (counters, tables,
//! `list_conns`, `reset`, ...) are the driver's.

use crate::pipeline::counters::WorkerCounters;
use crate::pipeline::counters::{bump, DropReason};
use crate::pipeline::snapshot::Snapshot;
use crate::pipeline::worker::{kernel_ports, Ctrl, Fabric, Worker};
use crate::port::{PortCaps, PortQueue, PORT_COUNTERS_EVERY_NS};
use std::sync::Arc;

/// A worker: its core and the port queues, rx burst and rings around it.
pub struct Driver<Q: PortQueue> {
    core: Worker<Q::Alloc>,
    queues: Vec<Q>,
    rx: Vec<Q::Buf>,
    /// Per port: the data port a kernel port's frames leave through (`None`: not a kernel port).
    kern_of: Vec<Option<usize>>,
    fabric: Arc<Fabric<Q::Buf>>,
    counters: Arc<WorkerCounters>,
    /// The core's next deadline (`None`: none).
    deadline: Option<u64>,
    /// When the queues' own counters are next published ([`Driver::publish_ports`]).
    ports_due: u64,
}

impl<Q: PortQueue> Driver<Q> {
    /// Worker `id` over `queues` (one per port, in interface order).
    pub fn new(id: usize, queues: Vec<Q>, snap: Arc<Snapshot>, fabric: Arc<Fabric<Q::Buf>>) -> Self {
        let allocs: Vec<Q::Alloc> = queues.iter().map(|q| q.allocator()).collect();
        let caps: Vec<PortCaps> = queues.iter().map(|q| q.caps().clone()).collect();
        let mut kern_of = vec![None; queues.len()];
        for (i, q) in kernel_ports(&snap, queues.len()).into_iter().enumerate() {
            if let Some(q) = q {
                kern_of[q] = Some(i);
            }
        }
        let core = Worker::new(id, allocs, caps, snap, fabric.env(id));
        let counters = fabric.counters[id].clone();
        let mut d = Driver {
            core,
            queues,
            rx: Vec::with_capacity(crate::port::BURST),
            kern_of,
            fabric,
            counters,
            deadline: None,
            ports_due: 0,
        };
        d.deliver_events();
        d.deadline = d.core.next_timeout();
        d
    }

    /// When the core next wants `handle_timeout` (ns; `None`: never, until traffic or a
    /// control message comes). A driver with nothing to receive may sleep until then.
    pub fn timeout(&self) -> Option<u64> {
        self.deadline
    }

    pub fn core(&self) -> &Worker<Q::Alloc> {
        &self.core
    }
    pub fn core_mut(&mut self) -> &mut Worker<Q::Alloc> {
        &mut self.core
    }
    pub fn queues_mut(&mut self) -> &mut [Q] {
        &mut self.queues
    }

    /// Tell the core the ports' current capabilities (a test changed an MTU).
    pub fn refresh_caps(&mut self) {
        for (i, q) in self.queues.iter().enumerate() {
            if self.core.port_caps().get(i) != Some(q.caps()) {
                self.core.set_port_caps(i, q.caps().clone());
            }
        }
    }

    /// One iteration of the poll loop at time `now` (ns). Returns the number
    /// of packets handled.
    pub fn poll(&mut self, now: u64) -> usize {
        let id = self.core.id;
        let mut work = 0;
        // Control messages first: a new snapshot applies before new packets. The rings are
        // looked at with `is_empty` (two loads) before `pop`, whose miss costs a full fence:
        // most polls find both empty, and a message pushed meanwhile waits one poll.
        let mut ctrl = false;
        while !self.fabric.ctrl[id].is_empty() {
            let Some(m) = self.fabric.ctrl[id].pop() else { break };
            if matches!(m, Ctrl::Snapshot(_)) {
                self.refresh_caps();
            }
            self.core.handle_ctrl(now, m);
            ctrl = true;
        }
        if ctrl {
            self.deadline = self.core.next_timeout();
        }
        let mut rx = std::mem::take(&mut self.rx);
        for i in 0..self.queues.len() {
            self.queues[i].rx_burst(&mut rx);
            if rx.is_empty() {
                continue;
            }
            if let Some(data) = self.kern_of[i] {
                // The kernel's own frames (BGP, BFD, ARP, ...) leave through its data port as sent.
                work += rx.len();
                bump(&self.counters.from_kernel, rx.len() as u64);
                self.core.transmit_queues()[data].append(&mut rx);
                continue;
            }
            work += self.core.handle_burst(now, i, &mut rx);
        }
        self.rx = rx;
        for _ in 0..crate::port::BURST * 4 {
            if self.fabric.handoff[id].is_empty() {
                break;
            }
            match self.fabric.handoff[id].pop() {
                Some((i, pkt)) => {
                    work += 1;
                    self.core.handle_handed(now, i as usize, pkt);
                }
                None => break,
            }
        }
        self.push_handoffs();
        if work > 0 {
            self.deadline = self.core.timeout_after_work(self.deadline);
        }
        if self.deadline.is_some_and(|d| d <= now) {
            self.core.handle_timeout(now);
            self.deadline = self.core.next_timeout();
        }
        self.deliver_events();
        self.core.flush_svc_counters_at(now, work == 0);
        self.flush_tx();
        if now >= self.ports_due {
            self.publish_ports(now);
        }
        work
    }

    /// Publish the queues' own counters ([`PortQueue::counters`]: a system call for an
    /// AF_PACKET queue) for the control plane; again after [`PORT_COUNTERS_EVERY_NS`].
    #[cold]
    #[inline(never)]
    fn publish_ports(&mut self, now: u64) {
        self.ports_due = now.saturating_add(PORT_COUNTERS_EVERY_NS);
        let c: Vec<_> = self.queues.iter_mut().map(|q| q.counters()).collect();
        self.fabric.publish_ports(self.core.id, c);
    }

    /// The core's events, delivered (rings, mutexes: [`Fabric::deliver`]).
    #[inline]
    fn deliver_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            self.fabric.deliver(self.core.id, e);
        }
    }

    /// Packets the core handed to other workers, into their rings.
    fn push_handoffs(&mut self) {
        let fabric = &self.fabric;
        let counters = &self.counters;
        for (owner, iface, pkt) in self.core.handoffs() {
            if fabric.handoff[owner].push((iface, pkt)).is_err() {
                counters.count_drop(DropReason::HandoffFull);
            }
        }
    }

    /// Transmit everything queued.
    pub fn flush_tx(&mut self) {
        let counters = &self.counters;
        let tx = self.core.transmit_queues();
        for (q, t) in self.queues.iter_mut().zip(tx.iter_mut()) {
            if !t.is_empty() {
                let r = q.tx_burst(t);
                bump(&counters.tx_packets, r.sent as u64);
                bump(&counters.tx_bytes, r.bytes);
                if r.dropped > 0 {
                    bump(&counters.drops[DropReason::TxFull as usize], r.dropped as u64);
                }
            }
            q.flush();
        }
    }
}

impl<Q: PortQueue> std::ops::Deref for Driver<Q> {
    type Target = Worker<Q::Alloc>;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl<Q: PortQueue> std::ops::DerefMut for Driver<Q> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.core
    }
}
