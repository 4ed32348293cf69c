//! The checker's threads: a pool that grows to `[engine] health_check_threads` and
//! shrinks when idle.
//!
//! A check blocks for up to its timeout (a connect to a server that does not answer, an
//! `exec` program), so each runs on a thread of its own. Before this pool the checker spawned
//! a thread for every check it ran: a director with a thousand real servers and a few checks
//! each had thousands at once, all started in the same instant. The pool bounds them. A
//! check due while every thread is busy waits in a FIFO queue; the checker queues a check
//! only once at a time, so the queue never holds more than one job per check. A check that
//! starts a second or more after it was due is counted late ([`PoolStats::late`]): the
//! sign that the pool is too small for the checks and their timeouts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A check started this long after it was due is counted late.
pub const LATE: Duration = Duration::from_secs(1);

/// What the pool is doing, for the metrics (`ferrovs_health_check_*`).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Threads alive, busy or idle.
    pub threads: AtomicUsize,
    /// Checks in progress.
    pub running: AtomicUsize,
    /// Checks waiting for a thread.
    pub queued: AtomicUsize,
    /// Checks run.
    pub started: AtomicU64,
    /// Checks that started [`LATE`] or more after they were due.
    pub late: AtomicU64,
}

struct Job {
    due: Instant,
    run: Box<dyn FnOnce() + Send>,
}

/// The pool. Dropping it lets its threads finish the check in hand and leave.
pub struct Pool {
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
    stats: Arc<PoolStats>,
    /// Threads waiting for a job.
    idle: Arc<AtomicUsize>,
    /// The most threads (`health_check_threads`; a reload may change it).
    cap: Arc<AtomicUsize>,
    /// An idle thread leaves after this long without a job.
    linger: Duration,
}

impl Pool {
    pub fn new(cap: usize, stats: Arc<PoolStats>, linger: Duration) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool { tx, rx, stats, idle: Arc::default(), cap: Arc::new(AtomicUsize::new(cap.max(1))), linger }
    }

    /// Set the most threads. Threads over a lowered cap leave as they finish their check.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Ordering::Relaxed);
    }

    /// Run `run` on a thread of the pool, as soon as one is free; `due`: when the check
    /// was due (for [`PoolStats::late`]).
    pub fn submit(&self, due: Instant, run: impl FnOnce() + Send + 'static) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        // Cannot fail: the pool holds the receiver.
        let _ = self.tx.send(Job { due, run: Box::new(run) });
        // A failed spawn is the checker's to report: it calls `grow` again every round.
        let _ = self.grow();
    }

    /// Start threads while jobs outnumber the idle threads, up to the cap. The checker
    /// calls it on every round too, so a job left behind by a thread that left idle just
    /// as it came (or by a failed spawn) is taken up. Returns the spawn error, if any.
    pub fn grow(&self) -> std::io::Result<()> {
        while self.rx.len() > self.idle.load(Ordering::Acquire) {
            let cap = self.cap.load(Ordering::Relaxed);
            let n = self.stats.threads.load(Ordering::Relaxed);
            if n >= cap {
                return Ok(());
            }
            self.stats.threads.store(n + 1, Ordering::Relaxed);
            // Counted idle before it starts, so this loop does not start one per job
            // already taken care of.
            self.idle.fetch_add(1, Ordering::AcqRel);
            let (rx, stats, idle, cap, linger) =
                (self.rx.clone(), self.stats.clone(), self.idle.clone(), self.cap.clone(), self.linger);
            let spawned = std::thread::Builder::new()
                .name("fvs-check".into())
                .spawn(move || worker(rx, stats, idle, cap, linger));
            if let Err(e) = spawned {
                self.idle.fetch_sub(1, Ordering::AcqRel);
                self.stats.threads.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Checks not started are not run: the checker is stopping.
    fn drop(&mut self) {
        while self.rx.try_recv().is_ok() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A thread of the pool; it starts counted idle.
fn worker(
    rx: crossbeam_channel::Receiver<Job>,
    stats: Arc<PoolStats>,
    idle: Arc<AtomicUsize>,
    cap: Arc<AtomicUsize>,
    linger: Duration,
) {
    loop {
        let job = rx.recv_timeout(linger);
        idle.fetch_sub(1, Ordering::AcqRel);
        let Ok(job) = job else {
            // Idle for `linger`, or the pool is gone.
            stats.threads.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        stats.running.fetch_add(1, Ordering::Relaxed);
        stats.started.fetch_add(1, Ordering::Relaxed);
        if job.due.elapsed() >= LATE {
            stats.late.fetch_add(1, Ordering::Relaxed);
        }
        (job.run)();
        stats.running.fetch_sub(1, Ordering::Relaxed);
        // Over a lowered cap: leave now.
        let mut n = stats.threads.load(Ordering::Relaxed);
        while n > cap.load(Ordering::Relaxed) {
            match stats.threads.compare_exchange(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(m) => n = m,
            }
        }
        idle.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn wait(what: &str, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Jobs that block: never more threads than the cap, every job still runs; the idle
    /// threads leave.
    #[test]
    fn bounded_and_first_come_first_served() {
        let stats = Arc::new(PoolStats::default());
        let pool = Pool::new(3, stats.clone(), Duration::from_millis(200));
        let (done_tx, done_rx) = mpsc::channel();
        let gate = Arc::new(std::sync::Barrier::new(4));
        for i in 0..12 {
            let (done_tx, gate) = (done_tx.clone(), gate.clone());
            pool.submit(Instant::now(), move || {
                // The first three hold their threads until the test lets them go.
                if i < 3 {
                    gate.wait();
                }
                done_tx.send(i).unwrap();
            });
        }
        wait("three threads busy", || stats.running.load(Ordering::Relaxed) == 3);
        assert_eq!(stats.threads.load(Ordering::Relaxed), 3, "the cap");
        assert_eq!(stats.queued.load(Ordering::Relaxed), 9);
        assert!(done_rx.try_recv().is_err(), "nothing ran past the three");
        gate.wait();
        let mut got: Vec<i32> = (0..12).map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..12).collect::<Vec<_>>(), "every job ran once");
        assert_eq!(stats.started.load(Ordering::Relaxed), 12);
        assert_eq!(stats.threads.load(Ordering::Relaxed), 3, "never more than the cap");
        assert_eq!(stats.queued.load(Ordering::Relaxed), 0);
        wait("the idle threads leave", || stats.threads.load(Ordering::Relaxed) == 0);
        // A job after that starts a thread again.
        pool.submit(Instant::now(), move || done_tx.send(99).unwrap());
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 99);
    }

    /// One thread, one job at a time: a second job waits for the first.
    #[test]
    fn one_thread_runs_one_at_a_time() {
        let stats = Arc::new(PoolStats::default());
        let pool = Pool::new(1, stats.clone(), Duration::from_secs(5));
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            pool.submit(Instant::now(), move || {
                tx.send((i, 'b')).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                tx.send((i, 'e')).unwrap();
            });
        }
        let seen: Vec<(i32, char)> = (0..10).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        let want: Vec<(i32, char)> = (0..5).flat_map(|i| [(i, 'b'), (i, 'e')]).collect();
        assert_eq!(seen, want, "strictly one after the other, first come first served");
        assert_eq!(stats.threads.load(Ordering::Relaxed), 1);
    }

    /// A job that waited a second or more for a thread is counted late; one that did not,
    /// not.
    #[test]
    fn late_checks_are_counted() {
        let stats = Arc::new(PoolStats::default());
        let pool = Pool::new(1, stats.clone(), Duration::from_secs(5));
        let (tx, rx) = mpsc::channel();
        let t1 = tx.clone();
        pool.submit(Instant::now(), move || t1.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(stats.late.load(Ordering::Relaxed), 0);
        pool.submit(Instant::now() - LATE, move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(stats.late.load(Ordering::Relaxed), 1);
    }

    /// `n` jobs that each hold their thread until the returned gate is passed (by the test
    /// too), then report on the returned channel.
    fn held(pool: &Pool, n: usize) -> (Arc<std::sync::Barrier>, mpsc::Receiver<()>) {
        let gate = Arc::new(std::sync::Barrier::new(n + 1));
        let (tx, rx) = mpsc::channel();
        for _ in 0..n {
            let (gate, tx) = (gate.clone(), tx.clone());
            pool.submit(Instant::now(), move || {
                gate.wait();
                tx.send(()).unwrap();
            });
        }
        (gate, rx)
    }

    /// A lowered cap: threads over it leave as they finish; a raised one lets more start.
    #[test]
    fn the_cap_follows_a_reload() {
        let stats = Arc::new(PoolStats::default());
        let pool = Pool::new(4, stats.clone(), Duration::from_secs(30));
        let (gate, rx) = held(&pool, 4);
        wait("four busy", || stats.running.load(Ordering::Relaxed) == 4);
        pool.set_cap(1);
        gate.wait();
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        wait("down to one thread", || stats.threads.load(Ordering::Relaxed) == 1);
        pool.set_cap(2);
        let (gate, rx) = held(&pool, 2);
        wait("two busy", || stats.running.load(Ordering::Relaxed) == 2);
        gate.wait();
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(stats.threads.load(Ordering::Relaxed), 2);
    }
}
