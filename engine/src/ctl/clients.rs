//! The control socket's clients: how many are served at once, how long one may take to
//! send a request, and which one makes room for a newcomer when every place is taken.
//!
//! A client is *idle* while the server waits for the first byte of its next request, and
//! *busy* from that byte until its reply is written. A request must arrive whole within
//! [`Limits::request`] of its first byte, so a client that trickles a byte at a time (which
//! no per-read timeout catches) holds its place for a bounded time. When all
//! [`Limits::max`] places are taken, the client idle the longest (at least
//! [`Limits::min_idle`]) is closed for the newcomer: clients that connect and never send
//! (a hung script, a forgotten `socat`) cannot lock the administrator out of a busy
//! daemon. Busy clients are never closed; a newcomer that finds no idle one is told to
//! try again.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bounds on the control socket's clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Clients served at once.
    pub max: usize,
    /// Longest wait for the first byte of a request.
    pub idle: Duration,
    /// Longest time from a request's first byte to its newline.
    pub request: Duration,
    /// An idle client is closed for a newcomer only after this long idle.
    pub min_idle: Duration,
    /// Longest time to write a reply.
    pub write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max: 32,
            idle: Duration::from_secs(30),
            request: Duration::from_secs(10),
            min_idle: Duration::from_secs(1),
            write: Duration::from_secs(10),
        }
    }
}

/// One client's place.
pub struct Client {
    /// A handle on the connection, to close it for a newcomer.
    stream: UnixStream,
    /// Milliseconds since [`Clients::epoch`] at which it became idle, plus one (0: busy).
    idle_since: AtomicU64,
}

/// The clients being served.
pub struct Clients {
    pub limits: Limits,
    epoch: Instant,
    list: Mutex<Vec<Arc<Client>>>,
}

/// What [`Clients::admit`] made of a newcomer.
pub enum Admit {
    /// Served in this place (the caller's thread frees it with [`Clients::leave`]).
    In(Arc<Client>),
    /// Every place is busy.
    Full,
}

impl Clients {
    pub fn new(limits: Limits) -> Clients {
        Clients { limits, epoch: Instant::now(), list: Mutex::new(Vec::new()) }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A place for the client on `stream`: a free one, else that of the client idle the
    /// longest (closed; its thread ends at its next read), else none.
    pub fn admit(&self, stream: &UnixStream) -> std::io::Result<Admit> {
        let handle = stream.try_clone()?;
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= self.limits.max.max(1) {
            let now = self.now_ms();
            let min = self.limits.min_idle.as_millis() as u64;
            let oldest = list
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match c.idle_since.load(Ordering::Relaxed) {
                    0 => None,
                    t if now.saturating_sub(t) >= min => Some((t, i)),
                    _ => None,
                })
                .min();
            let Some((_, i)) = oldest else { return Ok(Admit::Full) };
            let gone = list.swap_remove(i);
            let _ = gone.stream.shutdown(std::net::Shutdown::Both);
            tracing::info!("control: closed the client idle the longest for a new one ({} places)", self.limits.max);
        }
        let c = Arc::new(Client { stream: handle, idle_since: AtomicU64::new(0) });
        list.push(c.clone());
        Ok(Admit::In(c))
    }

    /// The client's place is free (its connection ended).
    pub fn leave(&self, c: &Arc<Client>) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|x| !Arc::ptr_eq(x, c));
    }

    /// Clients in their places.
    pub fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's connection as read by the server: idle until a request's first byte (at
/// most [`Limits::idle`]), then busy with at most [`Limits::request`] for the whole line.
/// [`Paced::next_request`] starts the next one.
pub struct Paced<'a> {
    stream: UnixStream,
    clients: &'a Clients,
    me: &'a Client,
    deadline: Option<Instant>,
}

impl<'a> Paced<'a> {
    pub fn new(stream: UnixStream, clients: &'a Clients, me: &'a Client) -> Paced<'a> {
        Paced { stream, clients, me, deadline: None }
    }
    /// Wait for a new request (the client is idle until its first byte).
    pub fn next_request(&mut self) {
        self.deadline = None;
    }
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timeout = match self.deadline {
            None => {
                self.me.idle_since.store(self.clients.now_ms(), Ordering::Relaxed);
                self.clients.limits.idle
            }
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request deadline"));
                }
                left
            }
        };
        self.stream.set_read_timeout(Some(timeout))?;
        let n = self.stream.read(buf)?;
        if n > 0 && self.deadline.is_none() {
            self.me.idle_since.store(0, Ordering::Relaxed);
            self.deadline = Some(Instant::now() + self.clients.limits.request);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    fn limits(max: usize) -> Limits {
        Limits {
            max,
            idle: Duration::from_secs(5),
            request: Duration::from_millis(300),
            min_idle: Duration::from_millis(50),
            write: Duration::from_secs(1),
        }
    }

    /// Does the peer of `s` see its connection closed (EOF) within a second?
    fn closed(peer: &mut UnixStream) -> bool {
        peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        matches!(peer.read(&mut [0u8; 8]), Ok(0))
    }

    #[test]
    fn the_longest_idle_client_makes_room_and_busy_ones_never_do() {
        let cl = Clients::new(limits(2));
        let (a, mut pa) = UnixStream::pair().unwrap();
        let (b, mut pb) = UnixStream::pair().unwrap();
        let (c, _pc) = UnixStream::pair().unwrap();
        let (Admit::In(ca), Admit::In(cb)) = (cl.admit(&a).unwrap(), cl.admit(&b).unwrap()) else {
            panic!("two places")
        };
        // Both busy: no room.
        assert!(matches!(cl.admit(&c).unwrap(), Admit::Full));
        // Both idle, `b` the longest; neither idle long enough yet.
        cb.idle_since.store(cl.now_ms(), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        ca.idle_since.store(cl.now_ms(), Ordering::Relaxed);
        assert!(matches!(cl.admit(&c).unwrap(), Admit::Full), "idle for less than min_idle");
        std::thread::sleep(Duration::from_millis(60));
        let Admit::In(cc) = cl.admit(&c).unwrap() else { panic!("the idle client makes room") };
        assert!(closed(&mut pb), "the client idle the longest is closed");
        pa.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert!(pa.read(&mut [0u8; 8]).is_err(), "the other one is still open (no data, no EOF)");
        assert_eq!(cl.len(), 2);
        cl.leave(&cc);
        cl.leave(&ca);
        assert!(cl.is_empty());
    }

    /// A client sending a byte every 50 ms never lets a per-read timeout run out; the
    /// request deadline ends it.
    #[test]
    fn a_trickling_request_ends_at_its_deadline() {
        let cl = Clients::new(limits(4));
        let (s, mut peer) = UnixStream::pair().unwrap();
        let Admit::In(me) = cl.admit(&s).unwrap() else { panic!() };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && peer.write_all(b"x").is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let mut r = BufReader::new(Paced::new(s, &cl, &me));
        let t0 = Instant::now();
        let mut buf = Vec::new();
        let e = r.read_until(b'\n', &mut buf).expect_err("no newline ever comes");
        let took = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        // The deadline, or the socket's read timeout set to what was left of it (EAGAIN).
        assert!(matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock), "{e}");
        assert!(took < Duration::from_secs(2), "held for {took:?}");
        assert!(!buf.is_empty());
        assert_eq!(me.idle_since.load(Ordering::Relaxed), 0, "busy from its first byte");
    }

    /// Between requests a client is idle (and may be closed for a newcomer); each request
    /// gets its own deadline.
    #[test]
    fn each_request_gets_its_own_deadline_and_the_wait_between_is_idle() {
        let cl = Clients::new(limits(4));
        let (s, mut peer) = UnixStream::pair().unwrap();
        let Admit::In(me) = cl.admit(&s).unwrap() else { panic!() };
        let t = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(200));
                peer.write_all(b"{}\n").unwrap();
            }
            peer
        });
        let mut r = BufReader::new(Paced::new(s, &cl, &me));
        for _ in 0..3 {
            r.get_mut().next_request();
            let mut buf = Vec::new();
            r.read_until(b'\n', &mut buf).expect("a whole request");
            assert_eq!(buf, b"{}\n");
        }
        let _peer = t.join().unwrap();
        r.get_mut().next_request();
        let mut buf = Vec::new();
        let reader = std::thread::scope(|sc| {
            let h = sc.spawn(|| r.read_until(b'\n', &mut buf));
            std::thread::sleep(Duration::from_millis(100));
            assert_ne!(me.idle_since.load(Ordering::Relaxed), 0, "idle while waiting for a request");
            // Closed for a newcomer: the wait ends.
            let _ = me.stream.shutdown(std::net::Shutdown::Both);
            h.join().unwrap()
        });
        assert_eq!(reader.ok(), Some(0));
    }
}
