//! In-memory port: packets are injected and captured by the caller. Used by
//! tests, `ferrovs replay` and `ferrovs bench`; `backend = "memory"` in a
//! daemon gives queues that never receive anything.

use super::{Packet, PortCaps, PortQueue, TxResult, BURST, HEADROOM, MAX_FRAME};
use std::collections::VecDeque;

const CAP: usize = HEADROOM + MAX_FRAME;

/// Most free buffers a queue keeps for reuse; beyond that a returned buffer
/// is freed. Without a bound, a queue that transmits more than it receives
/// (one-way traffic: a replay of one direction, DR) kept one buffer per
/// packet it ever sent.
pub const POOL_MAX: usize = 1024;

/// MAC of in-memory interface `i` when the config does not set one
/// (replay, tests, the memory backend of `ferrovs run`).
pub fn default_mac(i: usize) -> [u8; 6] {
    [0x02, 0xf5, 0x00, 0x00, 0x00, i as u8 + 1]
}

/// A heap packet buffer with headroom. Allocated once and recycled by the
/// in-memory, pcap and AF_PACKET backends.
///
/// A buffer dropped anywhere (a packet the worker drops) goes back to its
/// thread's pool (at most [`POOL_MAX`] buffers), where the next
/// [`HeapBuf::new`] of the thread takes it, as an mbuf goes back to its
/// mempool: a flood of dropped packets costs no allocation and no 2 KiB
/// memset per packet. A new buffer's bytes are therefore not zeroed (nothing
/// may rely on that: queue pools hand out used buffers too).
pub struct HeapBuf {
    buf: std::mem::ManuallyDrop<Box<Frame>>,
}

/// A [`HeapBuf`]'s memory: the frame's offset and length beside its bytes, as an mbuf's
/// header is beside its data, so the handle that moves through the queues is one pointer
/// (a DPDK `Mbuf` is one too): with the offset and length in the handle, every move of a
/// packet between queues copied 24 bytes. The bytes come first, so a frame's address is
/// the pointer plus its offset (with the two words first it measured 6 instructions per
/// established packet more).
#[repr(C)]
struct Frame {
    bytes: [u8; CAP],
    off: u32,
    len: u32,
}

thread_local! {
    // Boxes, not arrays: buffers move in and out of the pool without copying 2 KiB.
    #[allow(clippy::vec_box)]
    static POOL: std::cell::RefCell<Vec<Box<Frame>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: `self.buf` is taken exactly once, here, and `self` is not used after.
        let b = unsafe { std::mem::ManuallyDrop::take(&mut self.buf) };
        let mut b = Some(b);
        let _ = POOL.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < POOL_MAX {
                    p.extend(b.take());
                }
            }
        });
    }
}

impl HeapBuf {
    pub fn new() -> Self {
        let pooled = POOL.try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop())).ok().flatten();
        let mut buf = pooled.unwrap_or_else(|| Box::new(Frame { bytes: [0u8; CAP], off: 0, len: 0 }));
        buf.off = HEADROOM as u32;
        buf.len = 0;
        HeapBuf { buf: std::mem::ManuallyDrop::new(buf) }
    }
    /// A buffer holding a copy of `frame` (truncated to `MAX_FRAME`).
    pub fn from_slice(frame: &[u8]) -> Self {
        let mut b = HeapBuf::new();
        b.fill(frame);
        b
    }
    /// Replace the contents with a copy of `frame` (truncated to `MAX_FRAME`),
    /// resetting the headroom.
    pub fn fill(&mut self, frame: &[u8]) {
        let n = frame.len().min(MAX_FRAME);
        self.buf.off = HEADROOM as u32;
        self.buf.len = n as u32;
        self.buf.bytes[HEADROOM..HEADROOM + n].copy_from_slice(&frame[..n]);
    }
    /// Cheap recycle for benchmarks: make the frame `len` bytes long at the
    /// default headroom and overwrite only its first `head.len()` bytes
    /// (the headers the pipeline rewrites); the rest keeps whatever an
    /// earlier `fill` put there. `len` is clamped to `MAX_FRAME`.
    #[inline]
    pub fn restore(&mut self, head: &[u8], len: usize) {
        self.buf.off = HEADROOM as u32;
        self.buf.len = len.min(MAX_FRAME) as u32;
        // The bench's 64- and 128-byte templates: 16-byte words through registers. (Two
        // fixed-size `copy_from_slice`s were merged by LLVM into one variable-size memcpy
        // call, ~15 instructions per packet.)
        if head.len() == 64 || head.len() == 128 {
            let dst: &mut [u8; 128] = (&mut self.buf.bytes[HEADROOM..HEADROOM + 128]).try_into().expect("128");
            copy64(&mut dst[..64], &head[..64]);
            if head.len() == 128 {
                copy64(&mut dst[64..], &head[64..]);
            }
            return;
        }
        let n = head.len().min(MAX_FRAME);
        self.buf.bytes[HEADROOM..HEADROOM + n].copy_from_slice(&head[..n]);
    }
    /// Reset to an empty buffer with full headroom.
    pub fn reset(&mut self) {
        self.buf.off = HEADROOM as u32;
        self.buf.len = 0;
    }
}

/// Copy 64 bytes as four 16-byte words (no call to memcpy).
#[inline(always)]
fn copy64(d: &mut [u8], s: &[u8]) {
    let (Some(d), Some(s)) = (d.get_mut(..64), s.get(..64)) else { return };
    let w = |i: usize| u128::from_ne_bytes(s[i..i + 16].try_into().expect("16"));
    let (a, b, c, e) = (w(0), w(16), w(32), w(48));
    d[0..16].copy_from_slice(&a.to_ne_bytes());
    d[16..32].copy_from_slice(&b.to_ne_bytes());
    d[32..48].copy_from_slice(&c.to_ne_bytes());
    d[48..64].copy_from_slice(&e.to_ne_bytes());
}

impl Default for HeapBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HeapBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeapBuf({} bytes)", self.buf.len)
    }
}

impl Packet for HeapBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let (off, len) = (self.buf.off as usize, self.buf.len as usize);
        // SAFETY: every method keeps `off + len <= CAP` (`new`/`reset`: HEADROOM + 0;
        // `fill`/`restore`: HEADROOM + at most MAX_FRAME = CAP; `set_len` checks it;
        // `prepend`/`adj` move `off` and `len` by the same amount, `prepend` only while
        // `n <= off`, `adj` only while `n <= len`), so the range lies inside the buffer.
        // The checked slice cost two compares and branches on every access of the hot path.
        debug_assert!(off + len <= CAP);
        unsafe { self.buf.bytes.get_unchecked(off..off + len) }
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.buf.off as usize, self.buf.len as usize);
        debug_assert!(off + len <= CAP);
        // SAFETY: as in `data`.
        unsafe { self.buf.bytes.get_unchecked_mut(off..off + len) }
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        if self.buf.off as usize + len > CAP {
            return false;
        }
        self.buf.len = len as u32;
        true
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.buf.off as usize {
            return false;
        }
        // Cannot overflow: `n <= off` and `off + len <= CAP`.
        self.buf.off -= n as u32;
        self.buf.len += n as u32;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > self.buf.len as usize {
            return false;
        }
        self.buf.off += n as u32;
        self.buf.len -= n as u32;
        true
    }
    #[inline]
    fn capacity(&self) -> usize {
        CAP - self.buf.off as usize
    }
    #[inline]
    fn len(&self) -> usize {
        self.buf.len as usize
    }
    #[inline]
    fn is_empty(&self) -> bool {
        self.buf.len == 0
    }
}

/// One worker's queue of an in-memory port.
pub struct MemQueue {
    caps: PortCaps,
    /// Packets waiting to be received.
    pub rx: VecDeque<HeapBuf>,
    /// Packets transmitted, in order, until taken by the caller.
    pub tx: Vec<HeapBuf>,
    free: Vec<HeapBuf>,
    /// Keep transmitted packets in `tx` (tests, replay) or recycle them at
    /// once (bench, idle daemon).
    pub capture: bool,
}

impl MemQueue {
    pub fn new(caps: PortCaps) -> Self {
        MemQueue { caps, rx: VecDeque::new(), tx: Vec::new(), free: Vec::new(), capture: true }
    }
    /// Change the port's MTU (tests of MTU-dependent behaviour).
    pub fn set_mtu(&mut self, mtu: u16) {
        self.caps.mtu = mtu;
    }
    /// Queue a frame for reception.
    pub fn inject(&mut self, frame: &[u8]) {
        let mut b = self.free.pop().unwrap_or_default();
        b.fill(frame);
        self.rx.push_back(b);
    }
    /// Take everything transmitted so far.
    pub fn take_tx(&mut self) -> Vec<HeapBuf> {
        std::mem::take(&mut self.tx)
    }
    /// Return a buffer to this queue's pool (freed if the pool is full).
    pub fn recycle(&mut self, mut b: HeapBuf) {
        if self.free.len() < POOL_MAX {
            b.reset();
            self.free.push(b);
        }
    }
    /// Buffers in this queue's pool.
    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

impl PortQueue for MemQueue {
    type Buf = HeapBuf;
    type Alloc = super::HeapAlloc;

    #[inline]
    fn rx_burst(&mut self, out: &mut Vec<HeapBuf>) -> usize {
        let room = BURST.saturating_sub(out.len());
        let n = room.min(self.rx.len());
        if n == 0 {
            return 0;
        }
        if out.is_empty() && n == self.rx.len() {
            // The whole queue fits: swap buffers instead of moving packets
            // one by one (`Vec::from(VecDeque)` and back are O(1) once the
            // deque is contiguous, which a queue drained this way stays).
            let mut v = Vec::from(std::mem::take(&mut self.rx));
            std::mem::swap(out, &mut v);
            self.rx = VecDeque::from(v);
        } else {
            out.extend(self.rx.drain(..n));
        }
        n
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut Vec<HeapBuf>) -> TxResult {
        let mut r = TxResult::default();
        if self.capture {
            r.sent = pkts.len();
            r.bytes = pkts.iter().map(|p| p.len() as u64).sum();
            if self.tx.is_empty() {
                // Hand over the whole burst without moving packets.
                std::mem::swap(&mut self.tx, pkts);
            } else {
                self.tx.append(pkts);
            }
            return r;
        }
        for p in pkts.drain(..) {
            r.sent += 1;
            r.bytes += p.len() as u64;
            if self.capture {
                self.tx.push(p);
            } else {
                self.recycle(p);
            }
        }
        r
    }

    fn alloc(&mut self) -> Option<HeapBuf> {
        Some(self.free.pop().unwrap_or_default())
    }

    fn allocator(&self) -> super::HeapAlloc {
        super::HeapAlloc
    }

    fn caps(&self) -> &PortCaps {
        &self.caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> PortCaps {
        PortCaps { name: "t".into(), mac: [2, 0, 0, 0, 0, 1], queues: 1, mtu: 1500 }
    }

    #[test]
    fn burst_is_bounded_and_ordered() {
        let mut q = MemQueue::new(caps());
        for i in 0..40u8 {
            q.inject(&[i; 60]);
        }
        let mut v = Vec::new();
        assert_eq!(q.rx_burst(&mut v), BURST);
        assert_eq!(v[0].data()[0], 0);
        assert_eq!(v[31].data()[0], 31);
        assert_eq!(q.rx_burst(&mut v), 0, "out is already full");
        let r = q.tx_burst(&mut v);
        assert_eq!(r.sent, BURST);
        assert!(v.is_empty());
        assert_eq!(q.take_tx().len(), BURST);
    }

    #[test]
    fn headroom_prepend_and_adj() {
        let mut b = HeapBuf::from_slice(&[1, 2, 3]);
        assert!(b.prepend(20));
        assert_eq!(b.len(), 23);
        assert!(b.adj(20));
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(!b.prepend(HEADROOM + 1));
        assert!(b.set_len(MAX_FRAME));
        assert!(!b.set_len(CAP));
    }
}
