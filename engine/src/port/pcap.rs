//! Classic pcap files (not pcapng): a reader, a writer, and a [`PcapQueue`]
//! that receives from one and transmits to the other, for `ferrovs replay`
//! style use.
//!
//! Reading accepts both byte orders and both the microsecond (`0xa1b2c3d4`)
//! and nanosecond (`0xa1b23c4d`) magic, Ethernet link type (1) only. Writing
//! always produces microsecond, little-endian files, which every tool reads.
//!
//! The reader never trusts the file: a record longer than [`MAX_RECORD`] is an
//! error (no allocation of an absurd size), a record cut short is an error,
//! and only a clean end of file between records is `Ok(None)`.

use super::memory::HeapBuf;
use super::{Packet, PortCaps, PortQueue, TxResult, BURST, MAX_FRAME};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Largest record (`incl_len`) accepted on read, and the snaplen written.
pub const MAX_RECORD: u32 = 262_144;

/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;

const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const GLOBAL_HDR_LEN: usize = 24;
const RECORD_HDR_LEN: usize = 16;

/// Why a pcap file could not be read or written.
#[derive(Debug)]
pub enum PcapError {
    /// The underlying reader/writer failed.
    Io(io::Error),
    /// The first four bytes are not a classic pcap magic (pcapng files start
    /// with `0a0d0d0a` and are reported here too).
    BadMagic(u32),
    /// The link type is not Ethernet.
    UnsupportedLinkType(u32),
    /// The file ends inside the global header or a record.
    Truncated {
        /// What was being read ("file header", "record header", "packet data").
        what: &'static str,
        /// Index of the record (0-based) that is cut short.
        record: u64,
    },
    /// A record claims more captured bytes than [`MAX_RECORD`].
    RecordTooLarge { record: u64, incl_len: u32 },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "pcap i/o error: {e}"),
            PcapError::BadMagic(m) if *m == 0x0a0d_0d0a => {
                write!(f, "pcapng files are not supported, convert with `editcap -F pcap`")
            }
            PcapError::BadMagic(m) => write!(f, "not a pcap file (magic {m:#010x})"),
            PcapError::UnsupportedLinkType(l) => {
                write!(f, "unsupported pcap link type {l} (only Ethernet, 1, is supported)")
            }
            PcapError::Truncated { what, record } => {
                write!(f, "truncated pcap file: {what} of record {record} is cut short")
            }
            PcapError::RecordTooLarge { record, incl_len } => {
                write!(f, "corrupt pcap file: record {record} claims {incl_len} bytes (limit {MAX_RECORD})")
            }
        }
    }
}

impl std::error::Error for PcapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PcapError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> Self {
        PcapError::Io(e)
    }
}

/// Read until `buf` is full or EOF; returns the number of bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads packets from a classic pcap stream.
pub struct PcapReader<R: Read> {
    r: R,
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
    link_type: u32,
    record: u64,
    scratch: Vec<u8>,
}

impl PcapReader<BufReader<File>> {
    /// Open a pcap file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PcapError> {
        let f = File::open(path)?;
        PcapReader::new(BufReader::with_capacity(1 << 16, f))
    }
}

impl<R: Read> PcapReader<R> {
    /// Read and check the global header.
    pub fn new(mut r: R) -> Result<Self, PcapError> {
        let mut h = [0u8; GLOBAL_HDR_LEN];
        let n = read_full(&mut r, &mut h)?;
        if n >= 4 {
            // Report a bad magic even for a short file: it is the better hint.
            let m = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if ![MAGIC_USEC, MAGIC_NSEC, MAGIC_USEC.swap_bytes(), MAGIC_NSEC.swap_bytes()].contains(&m) {
                return Err(PcapError::BadMagic(u32::from_be_bytes([h[0], h[1], h[2], h[3]])));
            }
        }
        if n < GLOBAL_HDR_LEN {
            return Err(PcapError::Truncated { what: "file header", record: 0 });
        }
        let le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match le {
            MAGIC_USEC => (false, false),
            MAGIC_NSEC => (false, true),
            m if m == MAGIC_USEC.swap_bytes() => (true, false),
            _ => (true, true),
        };
        let rd = |o: usize| {
            let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let snaplen = rd(16);
        let network = rd(20);
        // Low 16 bits are the link type; upper bits carry FCS information.
        let link_type = network & 0xffff;
        if link_type != LINKTYPE_ETHERNET {
            return Err(PcapError::UnsupportedLinkType(link_type));
        }
        Ok(PcapReader { r, big_endian, nanos, snaplen, link_type, record: 0, scratch: Vec::new() })
    }

    /// The file's timestamps have nanosecond resolution.
    pub fn is_nanosecond(&self) -> bool {
        self.nanos
    }
    /// The file is big-endian.
    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }
    /// Snaplen from the file header (informational; not enforced).
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }
    /// Link type (always Ethernet once constructed).
    pub fn link_type(&self) -> u32 {
        self.link_type
    }

    /// The next packet: `(timestamp in ns since the epoch, frame)`, or `None`
    /// at a clean end of file.
    pub fn next_packet(&mut self) -> Result<Option<(u64, Vec<u8>)>, PcapError> {
        let mut buf = std::mem::take(&mut self.scratch);
        match self.next_packet_into(&mut buf) {
            Ok(Some(ts)) => Ok(Some((ts, buf))),
            other => {
                self.scratch = buf;
                other.map(|_| None)
            }
        }
    }

    /// Read the next packet into `buf` (cleared and resized to the captured
    /// length, reusing its allocation); returns its timestamp in ns, or
    /// `None` at a clean end of file.
    pub fn next_packet_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, PcapError> {
        let mut h = [0u8; RECORD_HDR_LEN];
        let n = read_full(&mut self.r, &mut h)?;
        if n == 0 {
            return Ok(None);
        }
        let record = self.record;
        if n < RECORD_HDR_LEN {
            return Err(PcapError::Truncated { what: "record header", record });
        }
        let be = self.big_endian;
        let rd = |o: usize| {
            let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
            if be {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (sec, frac, incl) = (rd(0), rd(4), rd(8));
        if incl > MAX_RECORD {
            return Err(PcapError::RecordTooLarge { record, incl_len: incl });
        }
        buf.clear();
        buf.resize(incl as usize, 0);
        let got = read_full(&mut self.r, buf)?;
        if got < incl as usize {
            buf.truncate(got);
            return Err(PcapError::Truncated { what: "packet data", record });
        }
        self.record += 1;
        // Cannot overflow: u32::MAX * 1e9 + u32::MAX * 1000 < u64::MAX.
        let frac_ns = if self.nanos { frac as u64 } else { frac as u64 * 1000 };
        Ok(Some(sec as u64 * 1_000_000_000 + frac_ns))
    }
}

impl<R: Read> Iterator for PcapReader<R> {
    type Item = Result<(u64, Vec<u8>), PcapError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_packet().transpose()
    }
}

/// Writes a microsecond, little-endian, Ethernet pcap stream.
pub struct PcapWriter<W: Write> {
    w: W,
    written: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Create (truncate) a pcap file and write its header.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, PcapError> {
        let f = File::create(path)?;
        PcapWriter::new(BufWriter::with_capacity(1 << 16, f))
    }
}

impl<W: Write> PcapWriter<W> {
    /// Write the global header to `w`.
    pub fn new(mut w: W) -> Result<Self, PcapError> {
        let mut h = [0u8; GLOBAL_HDR_LEN];
        h[0..4].copy_from_slice(&MAGIC_USEC.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone, sigfigs: 0.
        h[16..20].copy_from_slice(&MAX_RECORD.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w, written: 0 })
    }

    /// Append one packet. Frames longer than [`MAX_RECORD`] are truncated
    /// (with `orig_len` keeping the real length). Seconds past 2106 saturate.
    pub fn write_packet(&mut self, ts_ns: u64, data: &[u8]) -> Result<(), PcapError> {
        let sec = (ts_ns / 1_000_000_000).min(u32::MAX as u64) as u32;
        let usec = ((ts_ns % 1_000_000_000) / 1000) as u32;
        let incl = data.len().min(MAX_RECORD as usize);
        let orig = data.len().min(u32::MAX as usize) as u32;
        let mut h = [0u8; RECORD_HDR_LEN];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&usec.to_le_bytes());
        h[8..12].copy_from_slice(&(incl as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(&data[..incl])?;
        self.written += 1;
        Ok(())
    }

    /// Flush buffered output.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.w.flush()?;
        Ok(())
    }

    /// Flush and return the underlying writer.
    pub fn into_inner(mut self) -> Result<W, PcapError> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Counters of a [`PcapQueue`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapQueueStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Records longer than a buffer ([`MAX_FRAME`]) skipped rather than
    /// handed to the pipeline truncated.
    pub rx_oversize: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets that could not be written (no writer, or an i/o error).
    pub tx_dropped: u64,
}

/// What [`PcapQueue::finish`] hands back.
pub type ReaderWriter<R, W> = (Option<PcapReader<R>>, Option<PcapWriter<W>>);

/// A port queue that receives the packets of a pcap reader (as fast as the
/// pipeline polls) and writes what the pipeline transmits to a pcap writer,
/// stamped with the time set by [`PcapQueue::set_time`].
///
/// A read or write error stops that direction and is kept for
/// [`PcapQueue::take_error`]; the queue itself never fails.
pub struct PcapQueue<R: Read + Send, W: Write + Send> {
    caps: PortCaps,
    reader: Option<PcapReader<R>>,
    writer: Option<PcapWriter<W>>,
    free: Vec<HeapBuf>,
    scratch: Vec<u8>,
    now_ns: u64,
    last_rx_ns: u64,
    dirty: bool,
    eof: bool,
    error: Option<PcapError>,
    stats: PcapQueueStats,
}

impl<R: Read + Send, W: Write + Send> PcapQueue<R, W> {
    /// A queue over an optional reader (no reader: never receives) and an
    /// optional writer (no writer: transmitted packets are counted as
    /// dropped).
    pub fn new(caps: PortCaps, reader: Option<PcapReader<R>>, writer: Option<PcapWriter<W>>) -> Self {
        let eof = reader.is_none();
        PcapQueue {
            caps,
            reader,
            writer,
            free: (0..2 * BURST).map(|_| HeapBuf::new()).collect(),
            scratch: Vec::with_capacity(MAX_FRAME),
            now_ns: 0,
            last_rx_ns: 0,
            dirty: false,
            eof,
            error: None,
            stats: PcapQueueStats::default(),
        }
    }

    /// Timestamp (ns) stamped on packets transmitted from now on.
    pub fn set_time(&mut self, ts_ns: u64) {
        self.now_ns = ts_ns;
    }
    /// The timestamp currently stamped on transmitted packets.
    pub fn time(&self) -> u64 {
        self.now_ns
    }
    /// Timestamp of the last packet received from the reader.
    pub fn last_rx_time(&self) -> u64 {
        self.last_rx_ns
    }
    /// The reader is exhausted (or failed, or there is none).
    pub fn is_eof(&self) -> bool {
        self.eof
    }
    /// The first read/write error, if any.
    pub fn take_error(&mut self) -> Option<PcapError> {
        self.error.take()
    }
    pub fn stats(&self) -> PcapQueueStats {
        self.stats
    }
    /// Return a buffer to this queue's pool.
    pub fn recycle(&mut self, mut b: HeapBuf) {
        b.reset();
        self.free.push(b);
    }
    /// Flush the writer and hand back reader and writer.
    pub fn finish(mut self) -> Result<ReaderWriter<R, W>, PcapError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok((self.reader.take(), self.writer.take()))
    }

    fn set_error(&mut self, e: PcapError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

impl<R: Read + Send, W: Write + Send> PortQueue for PcapQueue<R, W> {
    type Buf = HeapBuf;
    type Alloc = super::HeapAlloc;

    fn rx_burst(&mut self, out: &mut Vec<HeapBuf>) -> usize {
        let mut n = 0;
        while !self.eof && out.len() < BURST {
            let Some(r) = self.reader.as_mut() else {
                self.eof = true;
                break;
            };
            match r.next_packet_into(&mut self.scratch) {
                Ok(Some(ts)) => {
                    self.last_rx_ns = ts;
                    if self.scratch.len() > MAX_FRAME {
                        self.stats.rx_oversize += 1;
                        continue;
                    }
                    let mut b = self.free.pop().unwrap_or_default();
                    b.fill(&self.scratch);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += b.len() as u64;
                    out.push(b);
                    n += 1;
                }
                Ok(None) => self.eof = true,
                Err(e) => {
                    self.eof = true;
                    self.set_error(e);
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut Vec<HeapBuf>) -> TxResult {
        let mut res = TxResult::default();
        for mut p in pkts.drain(..) {
            let ok = match self.writer.as_mut() {
                Some(w) => match w.write_packet(self.now_ns, p.data()) {
                    Ok(()) => true,
                    Err(e) => {
                        self.writer = None;
                        if self.error.is_none() {
                            self.error = Some(e);
                        }
                        false
                    }
                },
                None => false,
            };
            if ok {
                res.sent += 1;
                res.bytes += p.len() as u64;
                self.dirty = true;
            } else {
                res.dropped += 1;
            }
            p.reset();
            self.free.push(p);
        }
        self.stats.tx_packets += res.sent as u64;
        self.stats.tx_bytes += res.bytes;
        self.stats.tx_dropped += res.dropped as u64;
        res
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

    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.flush() {
                self.writer = None;
                self.set_error(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn caps() -> PortCaps {
        PortCaps { name: "pcap0".into(), mac: [2, 0, 0, 0, 0, 1], queues: 1, mtu: 1500 }
    }

    /// A hand-built pcap file: `be` byte order, `nanos` resolution.
    fn file(be: bool, nanos: bool, link: u32, recs: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
        let w16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
        let mut v = Vec::new();
        w32(&mut v, if nanos { MAGIC_NSEC } else { MAGIC_USEC });
        w16(&mut v, 2);
        w16(&mut v, 4);
        w32(&mut v, 0);
        w32(&mut v, 0);
        w32(&mut v, 65535);
        w32(&mut v, link);
        for (sec, frac, data) in recs {
            w32(&mut v, *sec);
            w32(&mut v, *frac);
            w32(&mut v, data.len() as u32);
            w32(&mut v, data.len() as u32 + 4);
            v.extend_from_slice(data);
        }
        v
    }

    #[test]
    fn round_trip() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let frames: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 60 + i as usize]).collect();
        for (i, f) in frames.iter().enumerate() {
            w.write_packet(1_700_000_000_123_456_000 + i as u64 * 1000, f).unwrap();
        }
        w.write_packet(5, &[]).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "microsecond little-endian magic");
        let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
        assert!(!r.is_nanosecond() && !r.is_big_endian());
        for (i, f) in frames.iter().enumerate() {
            let (ts, d) = r.next_packet().unwrap().unwrap();
            assert_eq!(ts, 1_700_000_000_123_456_000 + i as u64 * 1000);
            assert_eq!(&d, f);
        }
        // Sub-microsecond part is lost on write.
        assert_eq!(r.next_packet().unwrap().unwrap(), (0, vec![]));
        assert!(r.next_packet().unwrap().is_none());
        assert!(r.next_packet().unwrap().is_none(), "EOF is sticky");
    }

    #[test]
    fn file_round_trip() {
        let dir = std::env::temp_dir().join(format!("fvs-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.pcap");
        let mut w = PcapWriter::create(&p).unwrap();
        w.write_packet(3_000_000_001_000, &[1, 2, 3]).unwrap();
        w.flush().unwrap();
        drop(w);
        let got: Vec<_> = PcapReader::open(&p).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(3_000_000_001_000, vec![1, 2, 3])]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn both_magics_and_byte_orders() {
        let recs: &[(u32, u32, &[u8])] = &[(10, 7, &[0xaa; 14]), (11, 999_999, &[0xbb; 64])];
        for be in [false, true] {
            for nanos in [false, true] {
                let mut r = PcapReader::new(Cursor::new(file(be, nanos, 1, recs))).unwrap();
                assert_eq!(r.is_big_endian(), be);
                assert_eq!(r.is_nanosecond(), nanos);
                assert_eq!(r.snaplen(), 65535);
                let mul = if nanos { 1 } else { 1000 };
                let (ts, d) = r.next_packet().unwrap().unwrap();
                assert_eq!((ts, d), (10_000_000_000 + 7 * mul, vec![0xaa; 14]));
                let (ts, d) = r.next_packet().unwrap().unwrap();
                assert_eq!((ts, d), (11_000_000_000 + 999_999 * mul, vec![0xbb; 64]));
                assert!(r.next_packet().unwrap().is_none());
            }
        }
    }

    #[test]
    fn rejects_other_link_types_and_magics() {
        let e = PcapReader::new(Cursor::new(file(false, false, 113, &[]))).err().unwrap();
        assert!(matches!(e, PcapError::UnsupportedLinkType(113)), "{e}");
        let e = PcapReader::new(Cursor::new(file(true, true, 101, &[]))).err().unwrap();
        assert!(matches!(e, PcapError::UnsupportedLinkType(101)), "{e}");
        let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        ng.extend_from_slice(&[0; 40]);
        let e = PcapReader::new(Cursor::new(ng)).err().unwrap();
        assert!(e.to_string().contains("pcapng"), "{e}");
        let e = PcapReader::new(Cursor::new(b"hello world, this is text".to_vec())).err().unwrap();
        assert!(matches!(e, PcapError::BadMagic(_)), "{e}");
        let e = PcapReader::new(Cursor::new(Vec::new())).err().unwrap();
        assert!(matches!(e, PcapError::Truncated { what: "file header", .. }), "{e}");
    }

    #[test]
    fn truncated_files_error() {
        let full = file(false, false, 1, &[(1, 2, &[9; 100]), (3, 4, &[8; 100])]);
        // Header only: clean, empty.
        let mut r = PcapReader::new(Cursor::new(full[..24].to_vec())).unwrap();
        assert!(r.next_packet().unwrap().is_none());
        // Cut inside the global header.
        let e = PcapReader::new(Cursor::new(full[..20].to_vec())).err().unwrap();
        assert!(matches!(e, PcapError::Truncated { what: "file header", .. }));
        // Cut inside the second record's header.
        let mut r = PcapReader::new(Cursor::new(full[..24 + 116 + 10].to_vec())).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        let e = r.next_packet().unwrap_err();
        assert!(matches!(e, PcapError::Truncated { what: "record header", record: 1 }), "{e}");
        // Cut inside the second record's data.
        let mut r = PcapReader::new(Cursor::new(full[..full.len() - 1].to_vec())).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        let e = r.next_packet().unwrap_err();
        assert!(matches!(e, PcapError::Truncated { what: "packet data", record: 1 }), "{e}");
        assert!(e.to_string().contains("truncated"));
    }

    #[test]
    fn absurd_record_length_is_rejected_without_allocating() {
        let mut f = file(false, false, 1, &[]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        let mut r = PcapReader::new(Cursor::new(f)).unwrap();
        let e = r.next_packet().unwrap_err();
        assert!(matches!(e, PcapError::RecordTooLarge { incl_len: u32::MAX, .. }), "{e}");
    }

    #[test]
    fn queue_replays_and_captures() {
        let recs: Vec<(u32, u32, Vec<u8>)> = (0..40u32).map(|i| (100 + i, 0, vec![i as u8; 60])).collect();
        let mut recs_ref: Vec<(u32, u32, &[u8])> = recs.iter().map(|(a, b, c)| (*a, *b, c.as_slice())).collect();
        let big = vec![7u8; MAX_FRAME + 1];
        recs_ref.insert(5, (0, 0, &big));
        let r = PcapReader::new(Cursor::new(file(true, false, 1, &recs_ref))).unwrap();
        let w = PcapWriter::new(Vec::new()).unwrap();
        let mut q = PcapQueue::new(caps(), Some(r), Some(w));
        let mut v = Vec::new();
        assert_eq!(q.rx_burst(&mut v), BURST);
        assert_eq!(q.last_rx_time(), (100 + 31) * 1_000_000_000);
        assert!(!q.is_eof());
        q.set_time(42_000);
        let res = q.tx_burst(&mut v);
        assert_eq!((res.sent, res.dropped, res.bytes), (BURST, 0, BURST as u64 * 60));
        assert_eq!(q.rx_burst(&mut v), 8);
        assert!(q.is_eof());
        assert_eq!(q.rx_burst(&mut v), 0);
        q.tx_burst(&mut v);
        let mut b = q.alloc().unwrap();
        assert!(b.is_empty());
        assert!(b.set_len(14));
        b.data_mut().fill(0);
        q.tx_burst(&mut vec![b]);
        PortQueue::flush(&mut q);
        let s = q.stats();
        assert_eq!((s.rx_packets, s.rx_oversize, s.tx_packets), (40, 1, 41));
        assert!(q.take_error().is_none());
        let (_, w) = q.finish().unwrap();
        let out: Vec<_> =
            PcapReader::new(Cursor::new(w.unwrap().into_inner().unwrap())).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(out.len(), 41);
        assert!(out.iter().all(|(ts, _)| *ts == 42_000));
        assert_eq!(out[3].1, vec![3u8; 60]);
        assert_eq!(out[40].1, vec![0u8; 14]);
    }

    #[test]
    fn queue_without_writer_drops_and_keeps_read_errors() {
        let mut f = file(false, false, 1, &[(1, 0, &[1; 20])]);
        f.extend_from_slice(&[1, 2, 3]);
        let r = PcapReader::new(Cursor::new(f)).unwrap();
        let mut q: PcapQueue<_, Vec<u8>> = PcapQueue::new(caps(), Some(r), None);
        let mut v = Vec::new();
        assert_eq!(q.rx_burst(&mut v), 1);
        assert!(q.is_eof());
        assert!(matches!(q.take_error(), Some(PcapError::Truncated { .. })));
        let res = q.tx_burst(&mut v);
        assert_eq!((res.sent, res.dropped), (0, 1));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(mut r) = PcapReader::new(Cursor::new(data)) {
                for _ in 0..2048 {
                    match r.next_packet() {
                        Ok(Some((_, d))) => prop_assert!(d.len() <= MAX_RECORD as usize),
                        _ => break,
                    }
                }
            }
        }

        #[test]
        fn random_records_never_panic(
            be in any::<bool>(), nanos in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut f = file(be, nanos, 1, &[]);
            f.extend_from_slice(&tail);
            let mut r = PcapReader::new(Cursor::new(f)).unwrap();
            let mut buf = Vec::new();
            for _ in 0..4096 {
                match r.next_packet_into(&mut buf) {
                    Ok(Some(_)) => prop_assert!(buf.len() <= MAX_RECORD as usize),
                    _ => break,
                }
            }
        }
    }
}
