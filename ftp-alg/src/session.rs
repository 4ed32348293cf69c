//! The per-control-connection state machine. See the crate docs for the model.

use std::net::{IpAddr, SocketAddr};

use crate::parse::{self, Command};
use crate::seq::{self, Shifts};
use crate::{Actions, Dir, Event, ExpectKind, Expectation, Grant, Mode, OpenAll, Pinholes, SessionParams, Verdict};

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
    /// `227`/`229` lines that answered no pending `PASV`/`EPSV` (or sat inside a multi-line
    /// reply): not acted on.
    pub unsolicited: u64,
    /// Expectations the engine refused.
    pub refused: u64,
    /// Passive expectations the engine moved to another VIP port.
    pub moved: u64,
}

/// What a client command waiting for its final reply was, as far as the gateway cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Pending {
    #[default]
    Other,
    Pasv,
    Epsv,
    Auth,
    /// Full NAT from an IPv4 client to an IPv6 server: the client's `PASV`, sent on as
    /// `EPSV`; its `229` goes back as a `227` naming the VIP.
    PasvAsEpsv,
}

/// The client commands (NAT) whose final reply has not been seen yet, oldest first. Fixed size:
/// a client that pipelines more than [`CmdQueue::CAP`] commands gets the overflow counted as
/// `Other` commands at the tail (so the order of replies stays exact; a PASV among them is
/// simply not honoured).
#[derive(Clone, Debug, Default)]
struct CmdQueue {
    items: [Pending; CmdQueue::CAP],
    head: usize,
    len: usize,
    /// Commands after `items` that did not fit (all treated as `Other`).
    overflow: u32,
}

impl CmdQueue {
    const CAP: usize = 16;

    fn push(&mut self, c: Pending) {
        if self.overflow == 0 && self.len < Self::CAP {
            self.items[(self.head + self.len) % Self::CAP] = c;
            self.len += 1;
        } else {
            self.overflow = self.overflow.saturating_add(1);
        }
    }

    /// The command the next final reply answers.
    fn front(&self) -> Option<Pending> {
        if self.len > 0 {
            Some(self.items[self.head])
        } else if self.overflow > 0 {
            Some(Pending::Other)
        } else {
            None
        }
    }

    fn contains(&self, c: Pending) -> bool {
        (0..self.len).any(|k| self.items[(self.head + k) % Self::CAP] == c)
    }

    /// Pops everything up to and including the oldest `c` (which must be queued).
    fn pop_through(&mut self, c: Pending) {
        while let Some(x) = self.pop() {
            if x == c {
                return;
            }
        }
    }

    fn pop(&mut self) -> Option<Pending> {
        if self.len > 0 {
            let c = self.items[self.head];
            self.head = (self.head + 1) % Self::CAP;
            self.len -= 1;
            Some(c)
        } else if self.overflow > 0 {
            self.overflow -= 1;
            Some(Pending::Other)
        } else {
            None
        }
    }
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
    /// The line being skipped is an oversized one whose start was seen: its first bytes, so
    /// its end still counts as a command or reply (the reply order stays in step).
    skip_head: Option<[u8; 4]>,
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
    text: [u8; REWRITE_MAX],
    len: usize,
}

/// Longest replacement text: an `EPRT` argument with an IPv6 address (`|2|` + 39 + port).
const REWRITE_MAX: usize = 64;

/// Which incomplete lines are held for a possible rewrite.
#[derive(Clone, Copy)]
enum HoldOn {
    /// A reply starting with this prefix (`227 ` / `229 `).
    Reply(&'static [u8]),
    /// A `PORT` or `EPRT` command (full NAT), any case.
    Active,
}

impl HoldOn {
    fn may_match(self, line: &[u8]) -> bool {
        match self {
            HoldOn::Reply(p) => may_start_with(line, p),
            HoldOn::Active => {
                let n = line.len().min(5);
                let head = &line[..n];
                head.eq_ignore_ascii_case(&b"PORT "[..n])
                    || head.eq_ignore_ascii_case(&b"EPRT "[..n])
                    || head.eq_ignore_ascii_case(&b"PASV\r"[..n])
                    || head.eq_ignore_ascii_case(&b"PASV\n"[..n])
            }
        }
    }
}

/// What [`FtpSession::on_segment_quick_in`] made of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quick {
    /// Taken: forward it as is (its numbers translated); no expectation, no event.
    Forward,
    /// Its data lies beyond the window given: nothing changed (the engine drops it).
    OutOfWindow,
    /// Not the quick path's: nothing changed, call [`FtpSession::on_segment_with`].
    Full,
}

/// The FTP gateway state of one control connection. Feed it every payload-carrying segment with
/// [`FtpSession::on_segment`] and map sequence/acknowledgement numbers with
/// [`FtpSession::map_seq`] / [`FtpSession::map_ack`].
#[derive(Debug)]
pub struct FtpSession {
    p: SessionParams,
    orig: Stream,
    reply: Stream,
    /// `AUTH TLS` sent: waiting for the reply (NAT) or for the client's next bytes (DR, where
    /// the balancer sees no replies: a TLS record means TLS began, a plain command means the
    /// server refused it).
    auth_pending: bool,
    tls: bool,
    stats: Stats,
    /// Largest `Replace` payload wanted (see `set_max_payload`).
    max_payload: usize,
    /// NAT: client commands awaiting their final reply.
    cmds: CmdQueue,
    /// NAT: inside a multi-line reply (`ddd-` ... `ddd `) with this code.
    multiline: Option<u16>,
    /// NAT: the server's greeting (the first final reply, answering no command) was seen.
    greeted: bool,
    /// NAT: a hole in either direction may have hidden commands or replies, so replies and
    /// commands may be out of step: a `227`/`229` then answers the oldest pending
    /// `PASV`/`EPSV` wherever it is in the queue (still only as a single-line final reply).
    /// Cleared when the queue drains.
    desync: bool,
    /// Data ports below 1024 may be opened.
    allow_low_ports: bool,
    /// Either direction's sequence numbers may move ([`FtpSession::map_seq`] /
    /// [`FtpSession::map_ack`] are not the identity): a rewrite was recorded, or the session
    /// resumed a peer's translation.
    shifted: bool,
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
            cmds: CmdQueue::default(),
            multiline: None,
            greeted: false,
            desync: false,
            allow_low_ports: false,
            shifted: false,
        }
    }

    /// A session for a control connection another balancer carried until now (a cluster
    /// peer that failed): no stream position is known (each direction starts at the next
    /// segment it is given, taken as the start of a line: a command or reply that a takeover
    /// splits is read from there; unlike after a hole, no line is skipped, so the first
    /// PASV after a failover is still answered through the gateway), the server greeted long
    /// ago, and the sequence numbers move as the other balancer's rewrites made them move
    /// ([`crate::SeqShift`]).
    pub fn resume(p: SessionParams, orig: crate::SeqShift, reply: crate::SeqShift) -> Self {
        let mut s = Self::new(p);
        s.greeted = true;
        s.orig.shifts = crate::seq::Shifts::resumed(orig);
        s.reply.shifts = crate::seq::Shifts::resumed(reply);
        s.shifted = !(s.orig.shifts.is_identity() && s.reply.shifts.is_identity());
        s
    }

    /// `dir`'s translation reduced to its newest rewrite (see [`crate::SeqShift`]).
    pub fn seq_shift(&self, dir: Dir) -> crate::SeqShift {
        self.stream(dir).shifts.newest()
    }

    /// Lets `227`/`229`/`PORT`/`EPRT` open data connections on ports below 1024 (off by
    /// default: a privileged port as a data port is a classic bounce/port-scan vector; Linux's
    /// nf_conntrack_ftp does not check it, IPVS's ip_vs_ftp neither — we are stricter).
    pub fn set_allow_low_data_ports(&mut self, allow: bool) {
        self.allow_low_ports = allow;
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

    /// Original sequence number of the next byte the gateway expects in `dir` (once a
    /// segment or `set_isn` started the stream).
    #[inline]
    pub fn next_seq(&self, dir: Dir) -> Option<u32> {
        let st = self.stream(dir);
        st.started.then_some(st.next)
    }

    /// Memory of the line reassembly buffers of both directions (their capacity, in bytes):
    /// bounded by [`MAX_LINE`] each, whatever the peers send.
    pub fn buffer_bytes(&self) -> usize {
        self.orig.line.capacity() + self.reply.line.capacity()
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

    /// True while no sequence number moves in either direction: [`FtpSession::map_seq`] and
    /// [`FtpSession::map_ack`] return what they are given (no rewrite changed a length, no
    /// peer's translation was resumed). The common case, and a flood's: the engine then has
    /// no number to translate.
    #[inline]
    pub fn unshifted(&self) -> bool {
        !self.shifted
    }

    /// Maps the sequence number of a segment travelling in `dir` (original space, as seen on the
    /// wire before translation, or the `seq` of a [`Verdict::Replace`]) to the sequence number to
    /// put on the wire. Call it after `on_segment` for that segment.
    #[inline]
    pub fn map_seq(&self, dir: Dir, seq: u32) -> u32 {
        self.stream(dir).shifts.map_seq(seq)
    }

    /// Maps the acknowledgement number of a segment travelling in `dir` (it acknowledges the
    /// other direction's translated bytes) back to the other direction's original space.
    #[inline]
    pub fn map_ack(&self, dir: Dir, ack: u32) -> u32 {
        self.stream(dir.reverse()).shifts.unmap_ack(ack)
    }

    #[inline]
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

    /// Only NAT replies can need a rewrite (and so a hold): a `227` address, or a `229` port the
    /// engine moved; and with full NAT the client's `PORT`/`EPRT`.
    fn may_rewrite(&self, dir: Dir) -> bool {
        !self.tls
            && match dir {
                Dir::Reply => self.p.mode.sees_replies(),
                Dir::Original => matches!(self.p.mode, Mode::Fnat { .. }),
            }
    }

    /// What an incomplete line in `dir` must look like to be held (see [`HoldOn`]).
    fn hold_on(&self, dir: Dir) -> Option<HoldOn> {
        match dir {
            Dir::Reply => self.hold_prefix().map(HoldOn::Reply),
            Dir::Original => Some(HoldOn::Active),
        }
    }

    /// The prefix a reply line must start with to be held for a possible rewrite: only a final
    /// reply answering a pending `PASV` (`227 `, IPv4) or `EPSV` (`229 `), outside a multi-line
    /// reply.
    fn hold_prefix(&self) -> Option<&'static [u8]> {
        if self.multiline.is_some() {
            return None;
        }
        let v4 = self.p.vip.is_ipv4();
        if self.desync {
            return if v4 && self.cmds.contains(Pending::Pasv) {
                Some(b"227 ")
            } else if self.cmds.contains(Pending::Epsv) || self.cmds.contains(Pending::PasvAsEpsv) {
                Some(b"229 ")
            } else {
                None
            };
        }
        match self.cmds.front()? {
            Pending::Pasv if v4 => Some(b"227 "),
            Pending::Epsv | Pending::PasvAsEpsv => Some(b"229 "),
            _ => None,
        }
    }

    /// Processes one segment travelling in `dir` whose first payload byte has (untranslated)
    /// sequence number `seq`. Expectations and events are appended to `out`. Empty payloads
    /// are forwarded and change nothing.
    #[must_use]
    pub fn on_segment(&mut self, now: u64, dir: Dir, seq: u32, payload: &[u8], out: &mut Actions) -> Verdict {
        self.on_segment_with(now, dir, seq, payload, out, &mut OpenAll)
    }

    /// The cheap case of [`FtpSession::on_segment`], for floods of tiny segments: when the
    /// segment needs nothing from the gateway, processes it and returns true (the verdict is
    /// [`Verdict::Forward`], with no expectation and no event). Those are: no payload; a
    /// retransmission of bytes already sent unchanged (no rewrite in them, nothing held); new
    /// bytes, without a line end, of a line the gateway skips (longer than [`MAX_LINE`], or
    /// after a gap), or any new bytes once the connection turned to TLS. Otherwise changes
    /// nothing and returns false: call [`FtpSession::on_segment_with`].
    #[inline]
    pub fn on_segment_quick(&mut self, dir: Dir, seq: u32, payload: &[u8]) -> bool {
        self.on_segment_quick_in(dir, seq, payload, u32::MAX) == Quick::Forward
    }

    /// [`FtpSession::on_segment_quick`] that also tells a segment whose data starts more
    /// than `window` bytes (and less than 2^31) past the next byte the gateway expects in
    /// `dir`: [`Quick::OutOfWindow`], nothing changed (no receiver takes such data; fed to
    /// [`FtpSession::on_segment`] it would look like a gap). The engine's per-segment step:
    /// one look at the direction's state.
    #[inline(always)]
    pub fn on_segment_quick_in(&mut self, dir: Dir, seq: u32, payload: &[u8], window: u32) -> Quick {
        if payload.is_empty() {
            return Quick::Forward;
        }
        let tls = self.tls;
        let st = self.stream_mut(dir);
        if !st.started {
            return Quick::Full;
        }
        let ahead = seq.wrapping_sub(st.next);
        if ahead > window && ahead < 1 << 31 {
            return Quick::OutOfWindow;
        }
        if st.held {
            return Quick::Full;
        }
        let end = seq.wrapping_add(payload.len() as u32);
        if ahead == 0 {
            if tls || (st.skipping && !payload.contains(&b'\n')) {
                st.has_data = true;
                st.next = end;
                return Quick::Forward;
            }
            return Quick::Full;
        }
        let old = seq::before(seq, st.next) && !seq::after(end, st.next);
        if old && !st.shifts.as_slice().iter().any(|s| seq::before(s.start, end) && seq::after(s.end(), seq)) {
            self.stats.retransmits += 1;
            return Quick::Forward;
        }
        Quick::Full
    }

    /// [`FtpSession::on_segment`] asking `pins` for every data connection before announcing
    /// it: the engine may move a passive one to another VIP port (the reply is rewritten to
    /// say so) or refuse it. Granted expectations are also appended to `out.expectations`
    /// (with the port actually opened).
    #[must_use]
    pub fn on_segment_with(
        &mut self,
        now: u64,
        dir: Dir,
        seq: u32,
        payload: &[u8],
        out: &mut Actions,
        pins: &mut dyn Pinholes,
    ) -> Verdict {
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
            self.desync = true;
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
            self.process_new(now, dir, &payload[old_len..], out, pins)
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
    fn process_new(&mut self, now: u64, dir: Dir, data: &[u8], acts: &mut Actions, pins: &mut dyn Pinholes) -> Emit {
        let base = self.stream(dir).next;
        // DR sees no replies: after AUTH the client's next bytes tell. (NAT waits for the
        // server's answer: a client could otherwise switch the gateway off with a TLS record
        // the server refused, and get the next 227 with the real server's address.)
        if dir == Dir::Original && self.auth_pending && !self.tls && !self.p.mode.sees_replies() {
            let st = self.stream(dir);
            if st.line.is_empty() && !st.skipping {
                if data[0] == 0x16 {
                    // A TLS handshake record where a command would start: TLS began.
                    self.enter_tls(acts);
                    self.stream_mut(dir).next = base.wrapping_add(data.len() as u32);
                    return Emit::Raw;
                }
                // A plain command after AUTH means it was refused.
                self.auth_pending = false;
                acts.events.push(Event::TlsRefused);
            }
        }
        let was_held = self.stream(dir).held;
        let emit_start = if was_held { self.stream(dir).line_start } else { base };
        // Emitted bytes from `emit_start`, materialised only once they differ from the raw data.
        let mut out: Option<Vec<u8>> = if was_held { Some(Vec::new()) } else { None };
        if was_held && self.tls {
            // TLS began (the client's handshake) while a reply line was held: nothing is
            // parsed any more, so the held bytes go out as they are, before the new ones.
            let st = self.stream_mut(dir);
            st.held = false;
            out = Some(std::mem::take(&mut st.line));
        }
        let mut copied = 0usize; // data[..copied] is accounted for in `out`
        let mut stop: Option<usize> = None; // data[stop..] is held
        let mut consumed = data.len(); // data[consumed..] is left for a retransmission
        let mut i = 0usize;
        while i < data.len() && !self.tls {
            let may_rewrite = self.may_rewrite(dir);
            match data[i..].iter().position(|&b| b == b'\n') {
                Some(k) => {
                    let end = i + k + 1;
                    self.complete_line(now, dir, data, i, end, &mut out, &mut copied, acts, pins);
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
                    let prefix = if may_rewrite { self.hold_on(dir) } else { None };
                    let st = self.stream_mut(dir);
                    if st.skipping {
                        break;
                    }
                    if st.line.len() + piece.len() > MAX_LINE {
                        self.stats.oversized += 1;
                        acts.events.push(Event::Oversized);
                        let st = self.stream_mut(dir);
                        st.skipping = true;
                        st.skip_head = Some(head4(&st.line, piece));
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
                    if (fresh || st.held) && prefix.is_some_and(|p| p.may_match(&st.line)) {
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
        pins: &mut dyn Pinholes,
    ) {
        let base = self.stream(dir).next;
        let piece = &data[i..end];
        let mut line = std::mem::take(&mut self.stream_mut(dir).line);
        let st = self.stream_mut(dir);
        let held = st.held;
        st.held = false;
        if st.skipping {
            st.skipping = false;
            let head = st.skip_head.take();
            line.clear();
            st.line = line;
            if let Some(h) = head {
                self.unparsed_line(dir, &h);
            }
            return;
        }
        if line.len() + piece.len() > MAX_LINE {
            self.stats.oversized += 1;
            acts.events.push(Event::Oversized);
            self.unparsed_line(dir, &head4(&line, piece));
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
        let rw = self.handle_line(now, dir, full, acts, pins);
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
            self.shifted = true;
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
    fn handle_line(
        &mut self,
        now: u64,
        dir: Dir,
        line: &[u8],
        acts: &mut Actions,
        pins: &mut dyn Pinholes,
    ) -> Option<Rewrite> {
        match dir {
            Dir::Original => self.handle_command(now, line, acts, pins),
            Dir::Reply if self.p.mode.sees_replies() => self.handle_reply(now, line, acts, pins),
            // In DR replies do not pass the balancer; if the engine feeds some anyway they are
            // only sequence-tracked.
            Dir::Reply => None,
        }
    }

    /// An oversized line starting with `head` ended: it still is a command or a reply.
    fn unparsed_line(&mut self, dir: Dir, head: &[u8]) {
        match dir {
            Dir::Original => self.queue(Pending::Other),
            Dir::Reply if self.p.mode.sees_replies() => {
                let _ = self.track_reply(parse::reply_code(head));
            }
            Dir::Reply => {}
        }
    }

    /// Remembers a NAT command until its final reply (DR sees no replies).
    fn queue(&mut self, c: Pending) {
        if self.p.mode.sees_replies() {
            self.cmds.push(c);
        }
    }

    fn handle_command(
        &mut self,
        now: u64,
        line: &[u8],
        acts: &mut Actions,
        pins: &mut dyn Pinholes,
    ) -> Option<Rewrite> {
        let v4 = self.p.client.is_ipv4();
        match parse::classify_command(line) {
            Command::Port if v4 => {
                self.queue(Pending::Other);
                match parse::parse_port(line) {
                    Some(a) => return self.active(now, line, SocketAddr::V4(a), acts, pins),
                    None => self.malformed(acts),
                }
            }
            Command::Eprt => {
                self.queue(Pending::Other);
                match parse::parse_eprt(line) {
                    Some(a) => return self.active(now, line, a, acts, pins),
                    None => self.malformed(acts),
                }
            }
            // PASV is IPv4-only (RFC 2428): on an IPv6 session it opens nothing.
            c @ (Command::Pasv | Command::Epsv) if self.p.mode == Mode::Dr => {
                if v4 || c == Command::Epsv {
                    let kind = ExpectKind::Passive { vip_port: None, real_port: None };
                    let e = self.expect(now, kind, self.p.client.ip());
                    self.request(e, acts, pins);
                }
            }
            Command::Pasv if v4 && self.to_v6_server() => {
                // An IPv6 server need not take PASV (RFC 2428 is its IPv6 form): it is asked
                // with EPSV, and its 229 answered to the client as a 227.
                self.queue(Pending::PasvAsEpsv);
                let verb = parse::split_command(line).0.len();
                let mut text = [0u8; REWRITE_MAX];
                text[..4].copy_from_slice(b"EPSV");
                acts.events.push(Event::Rewrite);
                return Some(Rewrite { range: 0..verb, text, len: 4 });
            }
            Command::Pasv => self.queue(Pending::Pasv),
            Command::Epsv => self.queue(Pending::Epsv),
            Command::AuthTls => {
                self.queue(Pending::Auth);
                self.auth_pending = true;
            }
            _ => self.queue(Pending::Other),
        }
        None
    }

    /// Asks the engine for `e`; records a granted one in `acts`. Returns the grant.
    fn request(&mut self, mut e: Expectation, acts: &mut Actions, pins: &mut dyn Pinholes) -> Grant {
        let g = match (pins.open(&e), e.kind) {
            (Grant::OpenAt(p), ExpectKind::Passive { vip_port: Some(from), real_port }) if p != 0 => {
                e.kind = ExpectKind::Passive { vip_port: Some(p), real_port };
                self.stats.moved += 1;
                acts.events.push(Event::Moved { from, to: p });
                Grant::OpenAt(p)
            }
            (Grant::OpenAt(p), ExpectKind::Active { .. }) if p != 0 && matches!(self.p.mode, Mode::Fnat { .. }) => {
                Grant::OpenAt(p)
            }
            (Grant::Open, _) => Grant::Open,
            _ => Grant::Refused,
        };
        if g == Grant::Refused {
            self.stats.refused += 1;
            acts.events.push(Event::Refused);
        } else {
            acts.expectations.push(e);
        }
        g
    }

    /// A PORT/EPRT `line` naming `a`. Full NAT: the rewrite naming the reserved local port.
    fn active(
        &mut self,
        now: u64,
        line: &[u8],
        a: SocketAddr,
        acts: &mut Actions,
        pins: &mut dyn Pinholes,
    ) -> Option<Rewrite> {
        // A foreign address is a bounce whatever the port (the classic one names port 25):
        // checked first, so it is counted and logged as one.
        let foreign = a.ip() != self.p.client.ip();
        if foreign && !self.p.allow_foreign_port_address {
            acts.events.push(Event::BounceRefused { named: a.ip(), port: a.port() });
            return None;
        }
        if a.port() < 1024 && !self.allow_low_ports {
            acts.events.push(Event::LowPort { port: a.port() });
            return None;
        }
        if a.is_ipv4() != self.p.vip.is_ipv4() {
            // A foreign address of the other family: nothing the engine could translate.
            self.malformed(acts);
            return None;
        }
        // NAT: the real server's connection to the client is translated to
        // come from the VIP. DR: it goes to the client directly, but the
        // client answers the VIP, so its packets to VIP (from the named port)
        // must reach the same real server: the engine uses the same kind.
        let kind = ExpectKind::Active { client_port: a.port(), rs_src_port: None };
        let e = self.expect(now, kind, a.ip());
        let grant = self.request(e, acts, pins);
        let (Mode::Fnat { local }, Grant::OpenAt(port)) = (self.p.mode, grant) else { return None };
        // Full NAT: the real server is told to connect to the port reserved on the local
        // address (it has no route to the client). The local address has the server's
        // family, which may not be the client's: an IPv6 client's `EPRT |2|` becomes
        // `EPRT |1|` naming the IPv4 local address, an IPv4 client's `PORT` becomes
        // `EPRT |2|` naming the IPv6 one.
        let mut range = parse::command_arg_range(line);
        let mut text = [0u8; REWRITE_MAX];
        let port_cmd = parse::classify_command(line) == Command::Port;
        let len = match local {
            IpAddr::V4(l) if port_cmd => parse::format_227_addr(l, port, &mut text),
            IpAddr::V6(_) if port_cmd => {
                text[..5].copy_from_slice(b"EPRT ");
                range = 0..range.end;
                5 + parse::format_eprt_arg(b'|', SocketAddr::new(local, port), &mut text[5..])
            }
            _ => {
                let d = line.get(range.start).copied().unwrap_or(b'|');
                parse::format_eprt_arg(d, SocketAddr::new(local, port), &mut text)
            }
        };
        acts.events.push(Event::Rewrite);
        Some(Rewrite { range, text, len })
    }

    fn enter_tls(&mut self, acts: &mut Actions) {
        self.tls = true;
        self.auth_pending = false;
        acts.events.push(Event::TlsFallback);
    }

    /// A reply line (NAT). Multi-line replies are tracked and never acted on; a `227`/`229`
    /// counts only as the final reply to a pending `PASV`/`EPSV`, at a line start (lines are
    /// parsed whole, so text a server echoes inside a line can never match). Linux's
    /// nf_conntrack_ftp searches any reply segment for the pattern; IPVS's ip_vs_ftp looks at
    /// the start of a segment only: both can be fooled by echoed client text, this cannot.
    fn handle_reply(&mut self, now: u64, line: &[u8], acts: &mut Actions, pins: &mut dyn Pinholes) -> Option<Rewrite> {
        let parsed = parse::reply_code(line);
        let inside = self.multiline.is_some();
        let Some((code, answers)) = self.track_reply(parsed) else {
            if inside && matches!(parsed, Some((227 | 229, true))) {
                self.unsolicited(acts);
            }
            return None;
        };
        match (code, answers) {
            (227, Some(Pending::Pasv)) => self.passive_227(now, line, acts, pins),
            (229, Some(Pending::Epsv)) => self.passive_229(now, line, acts, pins),
            (229, Some(Pending::PasvAsEpsv)) => self.passive_229_as_227(now, line, acts, pins),
            (227 | 229, _) => {
                self.unsolicited(acts);
                None
            }
            (234, Some(Pending::Auth)) => {
                self.enter_tls(acts);
                None
            }
            (400..=599, Some(Pending::Auth)) => {
                self.auth_pending = false;
                acts.events.push(Event::TlsRefused);
                None
            }
            _ => None,
        }
    }

    /// Follows the reply structure for a line whose reply code is `parsed`. Returns the code
    /// and the command answered (if any) only for a single-line reply, the only kind acted on:
    /// lines of a multi-line reply (`ddd-` ... `ddd `), including its last, give `None`.
    fn track_reply(&mut self, parsed: Option<(u16, bool)>) -> Option<(u16, Option<Pending>)> {
        if let Some(code) = self.multiline {
            // Only `code SP` (or the bare code) ends it; every other line is text.
            if parsed == Some((code, true)) {
                self.multiline = None;
                let _ = self.final_reply(code);
            }
            return None;
        }
        let (code, last) = parsed?;
        if !last {
            self.multiline = Some(code);
            return None;
        }
        Some((code, self.final_reply(code)))
    }

    /// A final reply with `code` was read: returns the command it answers (`None` for the
    /// greeting, a preliminary `1xx` reply, or a reply nobody asked for).
    fn final_reply(&mut self, code: u16) -> Option<Pending> {
        if code < 200 {
            return None;
        }
        if !self.greeted {
            self.greeted = true;
            if code == 220 {
                return None;
            }
        }
        if self.desync {
            let want = match code {
                227 => Some(Pending::Pasv),
                229 if self.cmds.contains(Pending::PasvAsEpsv) && !self.cmds.contains(Pending::Epsv) => {
                    Some(Pending::PasvAsEpsv)
                }
                229 => Some(Pending::Epsv),
                _ => None,
            };
            if let Some(w) = want.filter(|&w| self.cmds.contains(w)) {
                self.cmds.pop_through(w);
                return Some(w);
            }
        }
        let c = self.cmds.pop();
        if self.cmds.front().is_none() {
            self.desync = false;
        }
        c
    }

    fn unsolicited(&mut self, acts: &mut Actions) {
        self.stats.unsolicited += 1;
        acts.events.push(Event::Unsolicited);
    }

    /// The `227` answering our client's `PASV`: the address always becomes the VIP (the real
    /// server's address never reaches the client), the port is the one opened.
    fn passive_227(&mut self, now: u64, line: &[u8], acts: &mut Actions, pins: &mut dyn Pinholes) -> Option<Rewrite> {
        let IpAddr::V4(vip) = self.p.vip.ip() else {
            return None;
        };
        let Some((addr, range)) = parse::parse_227(line) else {
            self.malformed(acts);
            return None;
        };
        let port = addr.port();
        let announce = match self.passive(now, port, acts, pins) {
            Grant::OpenAt(p) => p,
            _ => port,
        };
        let mut text = [0u8; REWRITE_MAX];
        let len = parse::format_227_addr(vip, announce, &mut text);
        if line[range.clone()] == text[..len] {
            return None;
        }
        acts.events.push(Event::Rewrite);
        Some(Rewrite { range, text, len })
    }

    /// The `229` answering our client's `EPSV`: rewritten only if the port was moved.
    fn passive_229(&mut self, now: u64, line: &[u8], acts: &mut Actions, pins: &mut dyn Pinholes) -> Option<Rewrite> {
        let Some((port, range)) = parse::parse_229_field(line) else {
            self.malformed(acts);
            return None;
        };
        let Grant::OpenAt(to) = self.passive(now, port, acts, pins) else {
            return None;
        };
        let mut text = [0u8; REWRITE_MAX];
        let len = parse::format_port(to, &mut text);
        acts.events.push(Event::Rewrite);
        Some(Rewrite { range, text, len })
    }

    /// Full NAT from an IPv4 client to an IPv6 server: is the server of the other family?
    fn to_v6_server(&self) -> bool {
        matches!(self.p.mode, Mode::Fnat { .. }) && self.p.vip.is_ipv4() && !self.p.real.is_ipv4()
    }

    /// The IPv6 server's `229` answering the `EPSV` the gateway sent for the IPv4 client's
    /// `PASV`: the whole line becomes `227 Entering Passive Mode (vip,p1,p2).`.
    fn passive_229_as_227(
        &mut self,
        now: u64,
        line: &[u8],
        acts: &mut Actions,
        pins: &mut dyn Pinholes,
    ) -> Option<Rewrite> {
        let IpAddr::V4(vip) = self.p.vip.ip() else { return None };
        let Some((port, _)) = parse::parse_229_field(line) else {
            self.malformed(acts);
            return None;
        };
        let announce = match self.passive(now, port, acts, pins) {
            Grant::OpenAt(p) => p,
            _ => port,
        };
        let mut text = [0u8; REWRITE_MAX];
        let head = b"227 Entering Passive Mode (";
        text[..head.len()].copy_from_slice(head);
        let mut len = head.len();
        len += parse::format_227_addr(vip, announce, &mut text[len..]);
        text[len..len + 2].copy_from_slice(b").");
        len += 2;
        acts.events.push(Event::Rewrite);
        Some(Rewrite { range: 0..parse::trim_eol(line).len(), text, len })
    }

    /// Opens `client -> vip:port -> real:port` (NAT passive), unless `port` is privileged.
    fn passive(&mut self, now: u64, port: u16, acts: &mut Actions, pins: &mut dyn Pinholes) -> Grant {
        if port < 1024 && !self.allow_low_ports {
            acts.events.push(Event::LowPort { port });
            return Grant::Refused;
        }
        let kind = ExpectKind::Passive { vip_port: Some(port), real_port: Some(port) };
        let e = self.expect(now, kind, self.p.client.ip());
        self.request(e, acts, pins)
    }
}

/// How much a segment's payload can grow by rewriting one field (`0,0,0,0,0,0` has 11 bytes,
/// the longest text 23), used with a few fields of slack for the payload limit check.
const MAX_GROWTH: usize = 64;

/// The first (up to) four bytes of the line made of `a` then `b`.
fn head4(a: &[u8], b: &[u8]) -> [u8; 4] {
    let mut h = [b' '; 4];
    for (d, s) in h.iter_mut().zip(a.iter().chain(b.iter())) {
        *d = *s;
    }
    h
}

/// Could this incomplete line still start with `prefix`?
fn may_start_with(line: &[u8], prefix: &[u8]) -> bool {
    let n = line.len().min(prefix.len());
    line[..n] == prefix[..n]
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
