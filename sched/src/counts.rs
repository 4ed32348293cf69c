//! Connection counters: [`SharedCounts`] for the engine, [`StaticCounts`]/[`NoConns`] for tests.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::ConnStats;

const CELLS_PER_LINE: usize = 16;

/// One cache line of counters, so two workers' rows never share a line.
#[repr(align(64))]
struct Line([AtomicU32; CELLS_PER_LINE]);

impl Line {
    fn new() -> Self {
        Line(std::array::from_fn(|_| AtomicU32::new(0)))
    }
}

/// Per-worker rows of relaxed `AtomicU32` active/inactive counters per destination.
///
/// Each row is written **only by its worker** (the `worker` argument of the mutators), with a
/// relaxed load and store, not a locked read-modify-write. Readers sum a column over all rows
/// ([`ConnStats`]). A worker's view of its own row is exact; the sum may miss other workers'
/// in-flight updates and is not an atomic snapshot. Two threads writing one row lose updates
/// (no memory unsafety). Decrements saturate at 0, so a stray decrement cannot wrap to 4 billion.
///
/// The number of destinations is fixed at construction; on a configuration change build a new
/// value and let each worker move its own row over with [`SharedCounts::adopt_row`].
pub struct SharedCounts {
    workers: usize,
    dests: usize,
    lines_per_row: usize,
    lines: Box<[Line]>,
}

const ACTIVE: usize = 0;
const INACTIVE: usize = 1;

impl SharedCounts {
    /// Zeroed counters for `workers` workers and `dests` destinations.
    pub fn new(workers: usize, dests: usize) -> Self {
        let lines_per_row = (dests * 2).div_ceil(CELLS_PER_LINE).max(1);
        let lines = (0..workers * lines_per_row).map(|_| Line::new()).collect();
        SharedCounts { workers, dests, lines_per_row, lines }
    }

    /// Number of worker rows.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Number of destinations per row.
    pub fn dests(&self) -> usize {
        self.dests
    }

    #[inline]
    fn cell(&self, worker: usize, dest: usize, which: usize) -> &AtomicU32 {
        // (A worker out of range fails the index below: its row would start past the end.)
        assert!(dest < self.dests, "counter index out of range");
        let slot = dest * 2 + which;
        &self.lines[worker * self.lines_per_row + slot / CELLS_PER_LINE].0[slot % CELLS_PER_LINE]
    }

    #[inline]
    fn add(&self, worker: usize, dest: usize, which: usize, delta: i8) {
        let c = self.cell(worker, dest, which);
        let v = c.load(Relaxed);
        let n = if delta >= 0 { v.saturating_add(1) } else { v.saturating_sub(1) };
        c.store(n, Relaxed);
    }

    /// A new established connection on `worker`.
    #[inline]
    pub fn inc_active(&self, worker: usize, dest: usize) {
        self.add(worker, dest, ACTIVE, 1);
    }

    /// An established connection on `worker` ended.
    #[inline]
    pub fn dec_active(&self, worker: usize, dest: usize) {
        self.add(worker, dest, ACTIVE, -1);
    }

    /// A new non-established connection on `worker`.
    #[inline]
    pub fn inc_inactive(&self, worker: usize, dest: usize) {
        self.add(worker, dest, INACTIVE, 1);
    }

    /// A non-established connection on `worker` ended.
    #[inline]
    pub fn dec_inactive(&self, worker: usize, dest: usize) {
        self.add(worker, dest, INACTIVE, -1);
    }

    /// A connection became established (e.g. TCP handshake completed).
    #[inline]
    pub fn move_inactive_to_active(&self, worker: usize, dest: usize) {
        self.dec_inactive(worker, dest);
        self.inc_active(worker, dest);
    }

    /// An established connection started closing (FIN/RST).
    #[inline]
    pub fn move_active_to_inactive(&self, worker: usize, dest: usize) {
        self.dec_active(worker, dest);
        self.inc_inactive(worker, dest);
    }

    /// `worker`'s own (exact) active count for `dest`.
    pub fn row_active(&self, worker: usize, dest: usize) -> u32 {
        self.cell(worker, dest, ACTIVE).load(Relaxed)
    }

    /// `worker`'s own (exact) inactive count for `dest`.
    pub fn row_inactive(&self, worker: usize, dest: usize) -> u32 {
        self.cell(worker, dest, INACTIVE).load(Relaxed)
    }

    /// Copy `worker`'s row from `old` into this value; `map[old_index]` is the new index (see
    /// [`crate::index_map`]); removed servers' counts are dropped. Called by `worker` itself when it
    /// switches to the new configuration, so the copy of its own row is exact.
    pub fn adopt_row(&self, worker: usize, old: &SharedCounts, map: &[Option<usize>]) {
        for (o, n) in map.iter().enumerate() {
            let Some(n) = *n else { continue };
            if o >= old.dests || n >= self.dests {
                continue;
            }
            for which in [ACTIVE, INACTIVE] {
                let v = old.cell(worker, o, which).load(Relaxed);
                self.cell(worker, n, which).store(v, Relaxed);
            }
        }
    }

    #[inline]
    fn sum(&self, dest: usize, which: usize) -> u32 {
        if dest >= self.dests {
            return 0;
        }
        let slot = dest * 2 + which;
        let (line, cell) = (slot / CELLS_PER_LINE, slot % CELLS_PER_LINE);
        let mut s: u64 = 0;
        for w in 0..self.workers {
            s += self.lines[w * self.lines_per_row + line].0[cell].load(Relaxed) as u64;
        }
        s.min(u32::MAX as u64) as u32
    }
}

impl ConnStats for SharedCounts {
    #[inline]
    fn active(&self, dest: usize) -> u32 {
        self.sum(dest, ACTIVE)
    }

    #[inline]
    fn inactive(&self, dest: usize) -> u32 {
        self.sum(dest, INACTIVE)
    }
}

/// Fixed counts (tests, benches, simulations). Missing indices read as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticCounts {
    /// Active count per destination index.
    pub active: Vec<u32>,
    /// Inactive count per destination index.
    pub inactive: Vec<u32>,
}

impl StaticCounts {
    /// Zeroed counts for `n` destinations.
    pub fn new(n: usize) -> Self {
        StaticCounts { active: vec![0; n], inactive: vec![0; n] }
    }
}

impl ConnStats for StaticCounts {
    fn active(&self, dest: usize) -> u32 {
        self.active.get(dest).copied().unwrap_or(0)
    }

    fn inactive(&self, dest: usize) -> u32 {
        self.inactive.get(dest).copied().unwrap_or(0)
    }
}

/// Every server has no connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoConns;

impl ConnStats for NoConns {
    fn active(&self, _: usize) -> u32 {
        0
    }

    fn inactive(&self, _: usize) -> u32 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<SharedCounts>();
    }

    #[test]
    fn rows_sum_and_stay_exact() {
        let c = SharedCounts::new(3, 20);
        c.inc_active(0, 19);
        c.inc_active(1, 19);
        c.inc_inactive(2, 19);
        c.move_inactive_to_active(2, 19);
        assert_eq!((c.active(19), c.inactive(19)), (3, 0));
        assert_eq!(c.row_active(2, 19), 1);
        c.dec_active(0, 19);
        c.dec_active(0, 19); // saturates
        assert_eq!(c.row_active(0, 19), 0);
        assert_eq!(c.active(19), 2);
        assert_eq!(c.active(20), 0, "out of range reads 0");
        c.move_active_to_inactive(1, 19);
        assert_eq!((c.active(19), c.inactive(19)), (1, 1));
    }

    #[test]
    #[should_panic]
    fn a_worker_out_of_range_panics() {
        SharedCounts::new(2, 3).inc_active(2, 0);
    }

    #[test]
    #[should_panic]
    fn a_dest_out_of_range_panics() {
        SharedCounts::new(2, 3).inc_active(0, 3);
    }

    #[test]
    fn rows_do_not_share_cache_lines() {
        let c = SharedCounts::new(2, 1);
        let a = c.cell(0, 0, 0) as *const _ as usize;
        let b = c.cell(1, 0, 0) as *const _ as usize;
        assert!(b - a >= 64);
    }

    #[test]
    fn concurrent_writers_each_own_row() {
        let c = Arc::new(SharedCounts::new(4, 3));
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        c.inc_active(w, i % 3);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!((0..3).map(|d| c.active(d)).sum::<u32>(), 40_000);
    }

    #[test]
    fn adopt_row_by_map() {
        let old = SharedCounts::new(2, 3);
        old.inc_active(1, 0);
        old.inc_inactive(1, 2);
        old.inc_inactive(1, 2);
        let new = SharedCounts::new(2, 2);
        new.adopt_row(1, &old, &[Some(1), None, Some(0)]);
        assert_eq!((new.active(1), new.inactive(0)), (1, 2));
        assert_eq!(new.row_active(0, 1), 0);
    }
}
