//! The per-control-connection state machine. See the crate docs for the model.

use std::net::{IpAddr, SocketAddr};

use crate::parse::{self, Command};
use crate::seq::{self, Shifts};
use crate::{Actions, Dir, Event, ExpectKind, Expectation, Mode, SessionParams, Verdict};

/// Longest line the gateway reassembles (without being "oversized"), and so also the most bytes
/// it ever holds per direction.
pub const MAX_LINE: usize = 1024;

/// Counters, for the engine's statistics and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// 227 replies whose address was rewritten.
    pub rewrites: u64,
    /// Segments (or parts of segments) recognised as already processed.
    pub retransmits: u64,
    /// Segments that arrived after a gap in sequence space.
    pub gaps: u64,
    /// `Hold` verdicts returned.
    pub holds: u64,
    /// Lines longer than [`MAX_LINE`].
    pub oversized: u64,
    /// Lines that looked like PORT/EPRT/227/229 but did not parse.
    pub malformed: u64,
}

/// One direction of the control connection.
#[derive(Debug, Default)]
struct Stream {
    /// A first sequence number is known (from a segment or `set_isn`).
    started: bool,
    /// Payload has been processed, so `set_isn` no longer applies.
    has_data: bool,
    /// Original sequence number of the next byte not yet processed.
    next: u32,
    /// Raw bytes of the incomplete line at the end of the processed data (at most `MAX_LINE`).
    line: Vec<u8>,
    /// Sequence number of `line[0]`.
    line_start: u32,
    /// `line` has not been sent on (the engine dropped it): it spans `[line_start, next)`.
    held: bool,
    /// Discarding bytes up to the next LF (oversized line, or resync after a gap).
    skipping: bool,
    /// Rewrites done in this direction, for seq/ack mapping and for replaying retransmissions.
    shifts: Shifts,
}

impl Stream {
    /// First sequence number that has not been emitted (the start of the held line, if any).
    fn emitted_until(&self) -> u32 {
        if self.held {
            self.line_start
        } else {
            self.next
        }
    }
}

/// What a piece of a segment turned into.
enum Emit {
    /// The raw bytes, unchanged, starting where the piece started.
    Raw,
    /// The raw bytes `..len` of the piece, unchanged (the rest is held).
    RawPrefix(usize),
    /// These bytes, starting at this original sequence number.
    Bytes(u32, Vec<u8>),
    /// Nothing to send now.
    Nothing,
}

/// A field rewrite found in a complete line: replace `line[range]` by `text[..len]`.
struct Rewrite {
    range: std::ops::Range<usize>,
    text: [u8; parse::MAX_227_ADDR_LEN],
    len: usize,
}

/// The FTP gateway state of one control connection. Feed it every payload-carrying segment with
/// [`FtpSession::on_segment`] and map sequence/acknowledgement numbers with
/// [`FtpSession::map_seq`] / [`FtpSession::map_ack`].
#[derive(Debug)]
pub struct FtpSession {
    p: SessionParams,
    orig: Stream,
    reply: Stream,
    /// `AUTH TLS` sent, waiting for the reply (NAT).
    auth_pending: bool,
    tls: bool,
    stats: Stats,
    /// Largest `Replace` payload wanted (see `set_max_payload`).
    max_payload: usize,
}

impl FtpSession {
    /// A session for a control connection `p.client` -> `p.vip` balanced to `p.real`.
    pub fn new(p: SessionParams) -> Self {
        Self {
            p,
            orig: Stream::default(),
            reply: Stream::default(),
            auth_pending: false,
            tls: false,
            stats: Stats::default(),
            max_payload: usize::MAX,
        }
    }

    /// The parameters the session was created with.
    pub fn params(&self) -> &SessionParams {
        &self.p
    }

    /// Sets the initial sequence number of `dir` from its SYN: `isn + 1` is the first payload
    /// byte. Ignored once payload has been seen in that direction.
    pub fn set_isn(&mut self, dir: Dir, isn: u32) {
        let st = self.stream_mut(dir);
        if !st.has_data {
            st.started = true;
            st.next = isn.wrapping_add(1);
        }
    }

    /// True once `AUTH TLS`/`AUTH SSL` was accepted: the session is no longer parsed and the
    /// engine should pin every new connection from the client IP to the VIP to this real server
    /// for as long as the control connection lives.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Asks the gateway to keep `Replace` payloads at most about `max` bytes (e.g. the path MSS),
    /// so a released hold plus a full-sized segment does not exceed the MTU. When a segment
    /// that completes a held line would give a longer payload, the gateway sends the held line
    /// and stops there, leaving the rest of the segment unprocessed: the peer does not ack it,
    /// the sender retransmits it and it is then processed as new data. Default: no limit.
    /// A single rewritten line is always sent whole, whatever its length.
    pub fn set_max_payload(&mut self, max: usize) {
        self.max_payload = max.max(1);
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes currently held (not yet sent on) in `dir`; never more than [`MAX_LINE`].
    pub fn held_len(&self, dir: Dir) -> usize {
        let st = self.stream(dir);
        if st.held {
            st.line.len()
        } else {
            0
        }
    }

    /// Maps the sequence number of a segment travelling in `dir` (original space, as seen on the
    /// wire before translation, or the `seq` of a [`Verdict::Replace`]) to the sequence number to
    /// put on the wire. Call it after `on_segment` for that segment.
    pub fn map_seq(&self, dir: Dir, seq: u32) -> u32 {
        self.stream(dir).shifts.map_seq(seq)
    }

    /// Maps the acknowledgement number of a segment travelling in `dir` (it acknowledges the
    /// other direction's translated bytes) back to the other direction's original space.
    pub fn map_ack(&self, dir: Dir, ack: u32) -> u32 {
        self.stream(dir.reverse()).shifts.unmap_ack(ack)
    }

    fn stream(&self, dir: Dir) -> &Stream {
        match dir {
            Dir::Original => &self.orig,
            Dir::Reply => &self.reply,
        }
    }

    fn stream_mut(&mut self, dir: Dir) -> &mut Stream {
        match dir {
            Dir::Original => &mut self.orig,
            Dir::Reply => &mut self.reply,
        }
    }

    /// Only NAT replies on an IPv4 session can need a rewrite (and so a hold).
    fn may_rewrite(&self, dir: Dir) -> bool {
        dir == Dir::Reply && self.p.mode == Mode::Nat && self.p.vip.is_ipv4() && !self.tls
    }

    /// Processes one segment travelling in `dir` whose first payload byte has (untranslated)
    /// sequence number `seq`. Expectations and events are appended to `out`. Empty payloads
    /// are forwarded and change nothing.
    #[must_use]
    pub fn on_segment(&mut self, now: u64, dir: Dir, seq: u32, payload: &[u8], out: &mut Actions) -> Verdict {
        if payload.is_empty() {
            return Verdict::Forward;
        }
        {
            let st = self.stream_mut(dir);
            if !st.started {
                st.started = true;
                st.next = seq;
            }
        }
        let gap = seq::after(seq, self.stream(dir).next);
        if gap {
            self.stats.gaps += 1;
            let st = self.stream_mut(dir);
            if st.held {
                // The engine dropped the held bytes; data after a hole cannot be sent with a
                // known delta. Drop it too (it is retransmitted once the hole is filled).
                self.stats.holds += 1;
                return Verdict::Hold;
            }
            st.line.clear();
            st.skipping = true;
            st.next = seq;
        }
        let st = self.stream(dir);
        let behind = st.next.wrapping_sub(seq) as usize;
        let old_len = if gap { 0 } else { behind.min(payload.len()) };
        if old_len > 0 {
            self.stats.retransmits += 1;
        }
        let old = if old_len > 0 { self.emit_old(dir, seq, &payload[..old_len]) } else { Emit::Nothing };
        // A modified old part plus new data could exceed the payload limit: then leave the new
        // part for its retransmission.
        let too_big =
            !matches!(old, Emit::Raw | Emit::Nothing) && payload.len().saturating_add(MAX_GROWTH) > self.max_payload;
        let new = if old_len < payload.len() && !too_big {
            self.stream_mut(dir).has_data = true;
            self.process_new(now, dir, &payload[old_len..], out)
        } else {
            Emit::Nothing
        };
        let v = compose(seq, payload, old_len, old, new);
        if matches!(v, Verdict::Hold) {
            self.stats.holds += 1;
        }
        v
    }

    /// The bytes to send for an already processed range `[seq, seq + raw.len())`: the raw bytes
    /// with remembered rewrites applied (extended to whole rewritten fields), cut at the held
    /// line.
    fn emit_old(&self, dir: Dir, seq: u32, raw: &[u8]) -> Emit {
        let st = self.stream(dir);
        let limit = st.emitted_until();
        let mut len = raw.len();
        if !seq::before(seq, limit) {
            return Emit::Nothing;
        }
        let to_limit = limit.wrapping_sub(seq) as usize;
        if to_limit < len {
            len = to_limit;
        }
        let end = seq.wrapping_add(len as u32);
        let overlapping = st.shifts.as_slice().iter().filter(|s| seq::before(s.start, end) && seq::after(s.end(), seq));
        let mut out: Option<(u32, Vec<u8>)> = None;
        let mut pos = seq; // next original byte to copy
        for s in overlapping {
            let (_, buf) = out.get_or_insert_with(|| {
                let start = if seq::before(s.start, seq) { s.start } else { seq };
                pos = start;
                (start, Vec::with_capacity(len + 16))
            });
            if seq::before(pos, s.start) {
                let a = pos.wrapping_sub(seq) as usize;
                let b = s.start.wrapping_sub(seq) as usize;
                buf.extend_from_slice(&raw[a..b]);
            }
            buf.extend_from_slice(s.new_bytes());
            pos = s.end();
        }
        match out {
            None if len == raw.len() => Emit::Raw,
            None => Emit::RawPrefix(len),
            Some((start, mut buf)) => {
                if seq::before(pos, end) {
                    buf.extend_from_slice(&raw[pos.wrapping_sub(seq) as usize..len]);
                }
                Emit::Bytes(start, buf)
            }
        }
    }

    /// Processes bytes never seen before; they start at `stream.next`.
    fn process_new(&mut self, now: u64, dir: Dir, data: &[u8], acts: &mut Actions) -> Emit {
        let base = self.stream(dir).next;
        let was_held = self.stream(dir).held;
        let emit_start = if was_held { self.stream(dir).line_start } else { base };
        // Emitted bytes from `emit_start`, materialised only once they differ from the raw data.
        let mut out: Option<Vec<u8>> = if was_held { Some(Vec::new()) } else { None };
        let mut copied = 0usize; // data[..copied] is accounted for in `out`
        let mut stop: Option<usize> = None; // data[stop..] is held
        let mut consumed = data.len(); // data[consumed..] is left for a retransmission
        let mut i = 0usize;
        while i < data.len() && !self.tls {
            let may_rewrite = self.may_rewrite(dir);
            match data[i..].iter().position(|&b| b == b'\n') {
                Some(k) => {
                    let end = i + k + 1;
                    self.complete_line(now, dir, data, i, end, &mut out, &mut copied, acts);
                    i = end;
                    if let Some(o) = &out {
                        if !o.is_empty() && o.len() + (data.len() - end) > self.max_payload {
                            // Send what we have; the rest is processed when retransmitted.
                            consumed = end;
                            break;
                        }
                    }
                }
                None => {
                    let piece = &data[i..];
                    let st = self.stream_mut(dir);
                    if st.skipping {
                        break;
                    }
                    if st.line.len() + piece.len() > MAX_LINE {
                        self.stats.oversized += 1;
                        acts.events.push(Event::Oversized);
                        let st = self.stream_mut(dir);
                        st.skipping = true;
                        if st.held {
                            // Give up holding: send the held bytes as they are.
                            out.get_or_insert_with(Vec::new).extend_from_slice(&st.line);
                            st.held = false;
                        }
                        st.line.clear();
                        break;
                    }
                    if st.line.is_empty() {
                        st.line_start = base.wrapping_add(i as u32);
                        st.line.reserve_exact(MAX_LINE);
                    }
                    let fresh = !st.held && st.line.is_empty();
                    st.line.extend_from_slice(piece);
                    if may_rewrite && (fresh || st.held) && may_be_227(&st.line) {
                        if !st.held {
                            st.held = true;
                            stop = Some(i);
                        } else {
                            stop = Some(0);
                        }
                    } else if st.held {
                        // It turned out not to be a 227: release the held bytes.
                        st.held = false;
                        let o = out.get_or_insert_with(Vec::new);
                        o.extend_from_slice(&st.line);
                        copied = data.len();
                    }
                    break;
                }
            }
        }
        let st = self.stream_mut(dir);
        st.next = base.wrapping_add(consumed as u32);
        let upto = stop.unwrap_or(consumed);
        match out {
            Some(mut o) => {
                if copied < upto {
                    o.extend_from_slice(&data[copied..upto]);
                }
                if o.is_empty() {
                    Emit::Nothing
                } else {
                    Emit::Bytes(emit_start, o)
                }
            }
            None if upto == data.len() => Emit::Raw,
            None if upto == 0 => Emit::Nothing,
            None => Emit::RawPrefix(upto),
        }
    }

    /// Handles the line ending at `data[end - 1]` (its last part is `data[i..end]`).
    #[allow(clippy::too_many_arguments)]
    fn complete_line(
        &mut self,
        now: u64,
        dir: Dir,
        data: &[u8],
        i: usize,
        end: usize,
        out: &mut Option<Vec<u8>>,
        copied: &mut usize,
        acts: &mut Actions,
    ) {
        let base = self.stream(dir).next;
        let piece = &data[i..end];
        let mut line = std::mem::take(&mut self.stream_mut(dir).line);
        let st = self.stream_mut(dir);
        let held = st.held;
        st.held = false;
        if st.skipping {
            st.skipping = false;
            line.clear();
            st.line = line;
            return;
        }
        if line.len() + piece.len() > MAX_LINE {
            self.stats.oversized += 1;
            acts.events.push(Event::Oversized);
            if held {
                let o = out.get_or_insert_with(Vec::new);
                o.extend_from_slice(&line);
                o.extend_from_slice(piece);
                *copied = end;
            }
            line.clear();
            self.stream_mut(dir).line = line;
            return;
        }
        // Lines that started in an earlier segment were either held or already sent unchanged.
        let whole_here = line.is_empty();
        let line_seq = if whole_here { base.wrapping_add(i as u32) } else { self.stream(dir).line_start };
        if !whole_here {
            line.extend_from_slice(piece);
        }
        let full: &[u8] = if whole_here { piece } else { &line };
        let rw = self.handle_line(now, dir, full, acts);
        let rw = rw.filter(|_| whole_here || held);
        if held || rw.is_some() {
            let o = out.get_or_insert_with(Vec::new);
            if whole_here && *copied < i {
                o.extend_from_slice(&data[*copied..i]);
            }
            match &rw {
                Some(r) => {
                    o.extend_from_slice(&full[..r.range.start]);
                    o.extend_from_slice(&r.text[..r.len]);
                    o.extend_from_slice(&full[r.range.end..]);
                }
                None => o.extend_from_slice(full),
            }
            *copied = end;
        }
        if let Some(r) = rw {
            let field_seq = line_seq.wrapping_add(r.range.start as u32);
            let orig_len = r.range.len();
            self.stream_mut(dir).shifts.push(field_seq, orig_len, &r.text[..r.len]);
            self.stats.rewrites += 1;
        }
        line.clear();
        self.stream_mut(dir).line = line;
    }

    fn expect(&self, now: u64, kind: ExpectKind, client: IpAddr) -> Expectation {
        Expectation {
            kind,
            client,
            vip: self.p.vip.ip(),
            real: self.p.real.ip(),
            expires: now.saturating_add(self.p.pinhole_timeout),
        }
    }

    fn malformed(&mut self, acts: &mut Actions) {
        self.stats.malformed += 1;
        acts.events.push(Event::Malformed);
    }

    /// Parses one complete line; returns the rewrite it needs, if any.
    fn handle_line(&mut self, now: u64, dir: Dir, line: &[u8], acts: &mut Actions) -> Option<Rewrite> {
        match dir {
            Dir::Original => {
                self.handle_command(now, line, acts);
                None
            }
            Dir::Reply if self.p.mode == Mode::Nat => self.handle_reply(now, line, acts),
            // In DR replies do not pass the balancer; if the engine feeds some anyway they are
            // only sequence-tracked.
            Dir::Reply => None,
        }
    }

    fn handle_command(&mut self, now: u64, line: &[u8], acts: &mut Actions) {
        let v4 = self.p.client.is_ipv4();
        match parse::classify_command(line) {
            Command::Port if v4 => match parse::parse_port(line) {
                Some(a) => self.active(now, SocketAddr::V4(a), acts),
                None => self.malformed(acts),
            },
            Command::Eprt => match parse::parse_eprt(line) {
                Some(a) => self.active(now, a, acts),
                None => self.malformed(acts),
            },
            // PASV is IPv4-only (RFC 2428): on an IPv6 session it opens nothing.
            c @ (Command::Pasv | Command::Epsv) if self.p.mode == Mode::Dr && (v4 || c == Command::Epsv) => {
                let kind = ExpectKind::Passive { vip_port: None, real_port: None };
                acts.expectations.push(self.expect(now, kind, self.p.client.ip()));
            }
            Command::AuthTls => match self.p.mode {
                Mode::Nat => self.auth_pending = true,
                Mode::Dr => self.enter_tls(acts),
            },
            _ => {}
        }
    }

    /// A PORT/EPRT naming `a`.
    fn active(&mut self, now: u64, a: SocketAddr, acts: &mut Actions) {
        let foreign = a.ip() != self.p.client.ip();
        if a.port() < 1024 || (foreign && !self.p.allow_foreign_port_address) {
            acts.events.push(Event::BounceRefused { named: a.ip(), port: a.port() });
            return;
        }
        if a.is_ipv4() != self.p.vip.is_ipv4() {
            // A foreign address of the other family: nothing the engine could translate.
            self.malformed(acts);
            return;
        }
        // NAT: the real server's connection to the client is translated to
        // come from the VIP. DR: it goes to the client directly, but the
        // client answers the VIP, so its packets to VIP (from the named port)
        // must reach the same real server: the engine uses the same kind.
        let kind = ExpectKind::Active { client_port: a.port(), rs_src_port: None };
        acts.expectations.push(self.expect(now, kind, a.ip()));
    }

    fn enter_tls(&mut self, acts: &mut Actions) {
        self.tls = true;
        self.auth_pending = false;
        acts.events.push(Event::TlsFallback);
    }

    fn handle_reply(&mut self, now: u64, line: &[u8], acts: &mut Actions) -> Option<Rewrite> {
        let (code, last) = parse::reply_code(line)?;
        if !last {
            return None;
        }
        match code {
            227 => {
                let IpAddr::V4(vip) = self.p.vip.ip() else {
                    return None;
                };
                let Some((addr, range)) = parse::parse_227(line) else {
                    self.malformed(acts);
                    return None;
                };
                let port = addr.port();
                let kind = ExpectKind::Passive { vip_port: Some(port), real_port: Some(port) };
                acts.expectations.push(self.expect(now, kind, self.p.client.ip()));
                let mut text = [0u8; parse::MAX_227_ADDR_LEN];
                let len = parse::format_227_addr(vip, port, &mut text);
                if line[range.clone()] == text[..len] {
                    return None;
                }
                acts.events.push(Event::Rewrite);
                Some(Rewrite { range, text, len })
            }
            229 => {
                match parse::parse_229(line) {
                    Some(port) => {
                        let kind = ExpectKind::Passive { vip_port: Some(port), real_port: Some(port) };
                        acts.expectations.push(self.expect(now, kind, self.p.client.ip()));
                    }
                    None => self.malformed(acts),
                }
                None
            }
            234 if self.auth_pending => {
                self.enter_tls(acts);
                None
            }
            400..=599 => {
                self.auth_pending = false;
                None
            }
            _ => None,
        }
    }
}

/// How much a segment's payload can grow by rewriting one field (`0,0,0,0,0,0` has 11 bytes,
/// the longest text 23), used with a few fields of slack for the payload limit check.
const MAX_GROWTH: usize = 64;

/// Could this incomplete line still become a final `227 ` reply?
fn may_be_227(line: &[u8]) -> bool {
    const P: &[u8] = b"227 ";
    let n = line.len().min(P.len());
    line[..n] == P[..n]
}

/// Joins what the already-processed part (`payload[..old_len]`, from `seq`) and the new part
/// (from `seq + old_len`, or from the held line start) turned into.
fn compose(seq: u32, payload: &[u8], old_len: usize, old: Emit, new: Emit) -> Verdict {
    let new_seq = seq.wrapping_add(old_len as u32);
    let (first_seq, mut buf) = match old {
        Emit::Raw if old_len == payload.len() => return Verdict::Forward,
        Emit::Raw if matches!(new, Emit::Raw) => return Verdict::Forward,
        Emit::Raw => (seq, payload[..old_len].to_vec()),
        Emit::RawPrefix(n) => (seq, payload[..n].to_vec()),
        Emit::Bytes(s, b) => (s, b),
        Emit::Nothing => {
            return match new {
                Emit::Raw if old_len == 0 => Verdict::Forward,
                Emit::Raw => Verdict::Replace { seq: new_seq, payload: payload[old_len..].to_vec() },
                Emit::RawPrefix(n) => {
                    Verdict::Replace { seq: new_seq, payload: payload[old_len..old_len + n].to_vec() }
                }
                Emit::Bytes(s, b) => Verdict::Replace { seq: s, payload: b },
                Emit::Nothing => Verdict::Hold,
            }
        }
    };
    // The old part ends exactly where the new part's output starts (at the processed frontier,
    // or at the held line's start when it was cut there), so the two are contiguous.
    match new {
        Emit::Raw => buf.extend_from_slice(&payload[old_len..]),
        Emit::RawPrefix(n) => buf.extend_from_slice(&payload[old_len..old_len + n]),
        Emit::Bytes(_, b) => buf.extend_from_slice(&b),
        Emit::Nothing => {}
    }
    if buf.is_empty() {
        Verdict::Hold
    } else {
        Verdict::Replace { seq: first_seq, payload: buf }
    }
}
