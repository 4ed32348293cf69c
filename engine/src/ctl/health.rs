//! Real-server health checks, run by the daemon outside the workers (like
//! keepalived's checkers and Piranha's nanny).
//!
//! For every service with a `[service.health_check]` (or several, as
//! `[[service.health_check]]`), every real server is checked every `interval`
//! seconds, each check bounded by `timeout`:
//! - `tcp`: a TCP connect;
//! - `send_expect`: connect, send `send` (if any), and expect a reply
//!   starting with `expect` (nanny's send/expect);
//! - `ftp`: expect a `220` banner, send `USER anonymous`, expect `331` or
//!   `230`, send `QUIT`;
//! - `http`: `GET path HTTP/1.0` with a `Host` header (the check's `host`, else the real
//!   server's address and port) and `Connection: close`; the status line must carry `status`
//!   (any 2xx without one), as keepalived's `HTTP_GET` (the body is not read);
//! - `https`: the same over TLS (keepalived's `SSL_GET`): the certificate verified against
//!   `tls_ca` for the `host` name (or the server's address) when given, else not verified;
//! - `dns`: a query (`query_name`, default `.`; `query_type`, default `SOA`) over UDP, with
//!   recursion desired; up when the answer (same id, the question echoed) carries no error
//!   code, as keepalived's `DNS_CHECK` ([`dns::check`]);
//! - `udp`: a datagram (`payload`) to the port; up unless it is refused (ICMP port
//!   unreachable) within the timeout, or, with `require_reply` / `reply`, on an answer
//!   (starting with `reply`), as keepalived's `UDP_CHECK` ([`udp`]);
//! - `ping`: an ICMP or ICMPv6 echo, up on its reply, as keepalived's `PING_CHECK` ([`ping`]);
//! - `smtp`: expect a `220` greeting, send `HELO helo_name` (else this host's name), expect
//!   `250`, send `QUIT`, as keepalived's `SMTP_CHECK`;
//! - `exec`: run `command` (an argv, no shell), exit status 0 is success, as keepalived's
//!   `MISC_CHECK` ([`exec_check`]).
//!
//! The port is the check's `port`, else the real server's, else the
//! service's first port; the address the check's `address` (a real server's
//! own check, keepalived's `connect_ip`), else the real server's; a check
//! with a `source` leaves from that address (keepalived's `bindto`, [`sock`]).
//! With several checks a server is up while every check is (keepalived's
//! checkers of one real server); each counts its own `rise` and `fall`. A
//! real server's own checks replace the service's. After `fall` failures in
//! a row a server is taken out, as its checks' `on_fail` says: quiesced
//! (weight 0, no new connections; established ones continue)
//! or removed (`on_fail = "remove"`: its connections are dropped), and
//! after `rise` successes in a row it is put back with its configured
//! weight. Both go through the same path as `ferrovsadm` edits: a new
//! snapshot posted to the workers. Servers start "up", except with `start_down`
//! (keepalived's `alpha`): then the control state holds a server down from the
//! moment it appears (the daemon's start, a reload or edit adding it) until its
//! check has passed `rise` times.
//!
//! Each check runs on a thread of a bounded pool ([`pool`], `[engine]
//! health_check_threads`); a check due while every thread is busy waits its turn.
//!
//! ## How checks reach real servers
//! Checks use the kernel's network stack (ordinary sockets), not the
//! kernel-bypassed data ports: the balancer host needs a management
//! interface owned by the kernel with a route to the real servers, as
//! keepalived on an LVS director does. In the lab this is a separate veth
//! with a kernel address on the real-server segment (e.g. 10.0.2.254/24
//! next to the engine's 10.0.2.1); on hardware, the management NIC or a
//! VLAN of it. The real servers see checks coming from that address.

use ferrovs_cfg::{Config, HealthCheck, HealthCheckKind};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A real server under health check: service name, address, shown port.
pub type ServerKey = (String, IpAddr, u16);

/// Health state of one real server, as shown by `ferrovsadm health`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthInfo {
    pub service: String,
    pub server: String,
    pub up: bool,
    pub last_error: Option<String>,
    pub checks: u64,
    pub failures: u64,
}

/// What the checker needs from the control plane (implemented by
/// [`crate::ctl::control::State`]): the administered configuration to find the
/// servers to check, and where to report their state.
pub trait HealthTarget: Send + Sync {
    fn config(&self) -> Arc<Config>;
    /// Take a server out (`true`) or put it back, as the service's
    /// `on_fail` says.
    fn set_down(&self, key: &ServerKey, down: bool);
    fn set_health(&self, key: &ServerKey, info: HealthInfo);
    /// The server is no longer checked (removed, or its service has no
    /// health check any more): drop its health state, and put it back if
    /// it was held down.
    fn forget(&self, key: &ServerKey);
    /// Is the server held down (a server of a `start_down` service, before its first
    /// checks)? A new target starts in that state.
    fn is_down(&self, key: &ServerKey) -> bool;
    /// The checks took the server up (`true`) or down: run its service's `notify` program
    /// for that ([`crate::ctl::notify`]), without waiting for it.
    fn server_event(&self, key: &ServerKey, up: bool);
    /// Where the checker's pool counts its threads and checks (for the metrics); none:
    /// its own.
    fn pool_stats(&self) -> Option<Arc<pool::PoolStats>> {
        None
    }
}

struct Target {
    check: HealthCheck,
    addr: SocketAddr,
    next: Instant,
    busy: bool,
    ok_run: u32,
    fail_run: u32,
    up: bool,
    checks: u64,
    failures: u64,
    last_error: Option<String>,
}

/// Run one check of a real server of `service`. `Err` says why it failed.
pub fn check(hc: &HealthCheck, service: &str, addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(hc.timeout.max(0.01));
    match hc.kind {
        HealthCheckKind::Exec => return exec_check(hc, service, addr, timeout),
        HealthCheckKind::Dns => return dns::check(hc, addr, timeout),
        HealthCheckKind::Udp => return udp::check(hc, addr, timeout),
        HealthCheckKind::Ping => return ping::check(addr.ip(), hc.source, timeout),
        _ => {}
    }
    let deadline = Instant::now() + timeout;
    let mut s = sock::tcp(addr, hc.source, timeout)?;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    match hc.kind {
        HealthCheckKind::Tcp => Ok(()),
        HealthCheckKind::Exec | HealthCheckKind::Dns | HealthCheckKind::Udp | HealthCheckKind::Ping => {
            unreachable!("run above, without a connection")
        }
        HealthCheckKind::SendExpect => {
            if let Some(send) = &hc.send {
                s.set_write_timeout(Some(left())).ok();
                s.write_all(send.as_bytes()).map_err(|e| format!("send: {e}"))?;
            }
            let expect = hc.expect.as_deref().unwrap_or("");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < expect.len().max(1) {
                s.set_read_timeout(Some(left())).ok();
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(format!("read: {e}")),
                }
                if Instant::now() >= deadline || got.len() > 65536 {
                    break;
                }
            }
            if got.starts_with(expect.as_bytes()) {
                Ok(())
            } else {
                Err(format!("expected {:?}, got {:?}", expect, String::from_utf8_lossy(&got[..got.len().min(64)])))
            }
        }
        HealthCheckKind::Ftp => {
            let mut line_reader = LineReader::new("FTP");
            let code = line_reader.reply(&mut s, deadline)?;
            if code != 220 {
                return Err(format!("FTP banner {code}, expected 220"));
            }
            s.set_write_timeout(Some(left())).ok();
            s.write_all(b"USER anonymous\r\n").map_err(|e| format!("send USER: {e}"))?;
            let code = line_reader.reply(&mut s, deadline)?;
            let _ = s.write_all(b"QUIT\r\n");
            if code == 331 || code == 230 {
                Ok(())
            } else {
                Err(format!("FTP USER reply {code}, expected 331 or 230"))
            }
        }
        HealthCheckKind::Smtp => {
            let mut r = LineReader::new("SMTP");
            let code = r.reply(&mut s, deadline)?;
            if code != 220 {
                return Err(format!("SMTP greeting {code}, expected 220"));
            }
            let helo = hc.helo_name.clone().unwrap_or_else(host_name);
            s.set_write_timeout(Some(left())).ok();
            s.write_all(format!("HELO {helo}\r\n").as_bytes()).map_err(|e| format!("send HELO: {e}"))?;
            let code = r.reply(&mut s, deadline)?;
            // Said goodbye to, its answer read, so the server logs no lost connection.
            if s.write_all(b"QUIT\r\n").is_ok() {
                let _ = r.reply(&mut s, deadline);
            }
            if code == 250 {
                Ok(())
            } else {
                Err(format!("SMTP HELO reply {code}, expected 250"))
            }
        }
        HealthCheckKind::Http => http_get(&mut s, hc, addr, deadline),
        HealthCheckKind::Https => {
            let mut tls = tls::connect(hc, addr, s, deadline)?;
            let r = http_get(&mut tls, hc, addr, deadline);
            tls.conn.send_close_notify();
            let _ = tls.flush();
            r
        }
    }
}

/// The `dns` check.
pub(crate) mod dns {
    use super::*;

    /// One query to the DNS server at `addr`, answered before `timeout`: its answer (the
    /// query's id, the response bit, the question echoed; anything else that arrives is
    /// ignored, as a stray or late datagram) must carry the error code 0 (NOERROR; an
    /// answer with no records is up too, as with keepalived). No answer at all is a failure,
    /// and so is an ICMP port unreachable (`connection refused`).
    pub(crate) fn check(hc: &HealthCheck, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let s = super::sock::udp(addr, hc.source)?;
        let id = random_id();
        let q = query(
            id,
            hc.query_name.as_deref().unwrap_or(HealthCheck::DEFAULT_QUERY_NAME),
            HealthCheck::dns_type_code(hc.query_type.as_deref().unwrap_or(HealthCheck::DEFAULT_QUERY_TYPE))
                .ok_or("unknown query type")?,
        );
        s.send(&q).map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no DNS answer".into());
            }
            s.set_read_timeout(Some(left)).ok();
            let n = match s.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err("no DNS answer".into())
                }
                Err(e) => return Err(format!("receive: {e}")),
            };
            if let Some(rcode) = answer_code(&buf[..n], &q) {
                return match rcode {
                    0 => Ok(()),
                    c => Err(format!("DNS answer {}", rcode_name(c))),
                };
            }
        }
    }

    /// A query with id `id` for `name` (`.` or dot-separated labels, validated by the config)
    /// of type `qtype`, class IN, recursion desired.
    pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::with_capacity(12 + name.len() + 6);
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    /// The error code of `r` if it answers `q`: the same id, the response bit set, one
    /// question, the same as `q`'s (names compared without regard to case, RFC 4343); `None`
    /// for anything else.
    pub(crate) fn answer_code(r: &[u8], q: &[u8]) -> Option<u8> {
        let (qh, question) = q.split_at(12);
        let (rh, rest) = (r.get(..12)?, r.get(12..)?);
        let one_question = rh[4..6] == [0, 1];
        let echoed = rest.get(..question.len()).is_some_and(|e| e.eq_ignore_ascii_case(question));
        (rh[..2] == qh[..2] && rh[2] & 0x80 != 0 && one_question && echoed).then_some(rh[3] & 0x0f)
    }

    /// An RCODE's name (RFC 1035, 6895).
    fn rcode_name(c: u8) -> String {
        let name = match c {
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => return format!("rcode {c}"),
        };
        format!("rcode {c} ({name})")
    }

    /// A query id nobody on the path can guess.
    fn random_id() -> u16 {
        let mut b = [0u8; 2];
        random_bytes(&mut b);
        u16::from_ne_bytes(b)
    }
}

mod ping;
pub mod pool;
mod sock;
mod udp;

/// This host's name (gethostname(2)) as an SMTP `HELO` gives it: `localhost` if it is not
/// one visible ASCII word.
fn host_name() -> String {
    let mut b = [0u8; 256];
    // SAFETY: gethostname writes at most `b.len()` bytes into `b`.
    let ok = unsafe { libc::gethostname(b.as_mut_ptr().cast(), b.len()) } == 0;
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    match std::str::from_utf8(&b[..n]) {
        Ok(h) if ok && !h.is_empty() && h.bytes().all(|c| c.is_ascii_graphic()) => h.to_string(),
        _ => "localhost".to_string(),
    }
}

/// Fill `b` with bytes nobody on the path can guess (getrandom(2); if that fails, the clock
/// mixed with a counter: still unequal from one check to the next).
fn random_bytes(b: &mut [u8]) {
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return;
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut x = t ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    for c in b.chunks_mut(8) {
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(29) ^ t;
        c.copy_from_slice(&x.to_ne_bytes()[..c.len()]);
    }
}

/// A connection an HTTP check talks over: plain TCP, or TLS over it (`https`). The socket
/// is there to bound each read and write by the check's deadline.
trait Stream: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// `http` and `https` once connected: `GET path` with the Host header, and the status line's
/// code checked against `status` (any 2xx without one); with `digest`, the MD5 of the body
/// too ([`body_md5`]).
fn http_get<S: Stream>(s: &mut S, hc: &HealthCheck, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    let host = match &hc.host {
        Some(h) => h.clone(),
        None => addr.to_string(),
    };
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ferrovs-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        hc.path.as_deref().unwrap_or("/")
    );
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.tcp().set_write_timeout(Some(left)).ok();
    s.write_all(req.as_bytes()).map_err(|e| format!("send: {e}"))?;
    s.flush().map_err(|e| format!("send: {e}"))?;
    let (code, rest) = http_status(s, deadline)?;
    match hc.status {
        Some(want) if code == want => {}
        None if (200..300).contains(&code) => {}
        Some(want) => return Err(format!("HTTP status {code}, expected {want}")),
        None => return Err(format!("HTTP status {code}, expected 2xx")),
    }
    let Some(want) = &hc.digest else { return Ok(()) };
    let got = body_md5(s, rest, deadline)?;
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(format!("body MD5 {got}, expected {want}"))
    }
}

/// The largest body a `digest` check reads (a bigger one fails the check).
const MAX_BODY: usize = 4 << 20;

/// The MD5, in lower-case hex, of the body of the response whose bytes after the status
/// line are `rest` and then whatever `s` delivers until the server closes (the request
/// asked for HTTP/1.0 and `Connection: close`, so the body is not chunked): the bytes after
/// the header's empty line, as keepalived's `digest` takes them. Before `deadline`, at most
/// [`MAX_BODY`] bytes.
fn body_md5<S: Stream>(s: &mut S, rest: Vec<u8>, deadline: Instant) -> Result<String, String> {
    use md5::Digest;
    let mut head = rest;
    let mut b = [0u8; 16384];
    let mut md5 = md5::Md5::new();
    let mut body = 0usize;
    // The header's end: after its first empty line (CRLF, or a bare LF). `line` is where the
    // header's next line starts (`head` starts right after the status line).
    let mut in_head = true;
    let mut line = 0usize;
    loop {
        if in_head {
            let mut end = None;
            while let Some(nl) = head[line..].iter().position(|&c| c == b'\n').map(|p| line + p) {
                if matches!(&head[line..nl], b"" | b"\r") {
                    end = Some(nl + 1);
                    break;
                }
                line = nl + 1;
            }
            if let Some(e) = end {
                md5.update(&head[e..]);
                body += head.len() - e;
                in_head = false;
            } else if head.len() > 64 << 10 {
                return Err("HTTP header over 64 KiB".into());
            }
        }
        if body > MAX_BODY {
            return Err(format!("HTTP body over {} MiB", MAX_BODY >> 20));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out reading the HTTP body".into());
        }
        s.tcp().set_read_timeout(Some(left)).ok();
        let n = match s.read(&mut b) {
            Ok(n) => n,
            // A TLS server that closes without close_notify: the body ends there too.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            if in_head {
                return Err("connection closed in the HTTP header".into());
            }
            break;
        }
        if in_head {
            head.extend_from_slice(&b[..n]);
        } else {
            md5.update(&b[..n]);
            body += n;
        }
    }
    Ok(md5.finalize().iter().map(|x| format!("{x:02x}")).collect())
}

/// The TLS side of the `https` check (rustls, TLS 1.2 and 1.3).
mod tls {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};

    /// The TLS handshake with the real server over `s`, before `deadline`. With `tls_ca` the
    /// server's certificate must chain to one of its CAs and be valid for the name the check
    /// sends ([`server_name`]); without, any certificate is taken (keepalived's `SSL_GET`
    /// verifies none: real servers mostly carry the VIP's certificate, not one for their own
    /// address), but the handshake's signatures are still checked.
    pub(super) fn connect(
        hc: &HealthCheck,
        addr: SocketAddr,
        mut s: TcpStream,
        deadline: Instant,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
        // ring's provider is deprecated for want of post-quantum key exchange, which a
        // liveness probe of the balancer's own real servers has no use for; ring builds with
        // a C compiler alone (aws-lc-rs, the alternative, needs cmake).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match &hc.tls_ca {
            Some(path) => builder.with_root_certificates(roots(path)?).with_no_client_auth(),
            None => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))).with_no_client_auth()
            }
        };
        let mut conn =
            ClientConnection::new(Arc::new(config), server_name(hc, addr)?).map_err(|e| format!("TLS: {e}"))?;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("TLS handshake timed out".into());
            }
            s.set_read_timeout(Some(left)).ok();
            s.set_write_timeout(Some(left)).ok();
            conn.complete_io(&mut s).map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(StreamOwned::new(conn, s))
    }

    /// The CA certificates of the PEM file `path` (read at each check, so a renewed bundle
    /// needs no reload).
    fn roots(path: &str) -> Result<RootCertStore, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("tls_ca {path}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls_ca {path}: {e}"))?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("tls_ca {path}: no usable CA certificate"));
        }
        Ok(roots)
    }

    /// The name the check gives the server: `host` without a port (a DNS name also goes as
    /// SNI; an address literal does not), else the real server's address.
    pub(super) fn server_name(hc: &HealthCheck, addr: SocketAddr) -> Result<ServerName<'static>, String> {
        let Some(host) = hc.host.as_deref() else { return Ok(ServerName::IpAddress(addr.ip().into())) };
        let name = if let Ok(sa) = host.parse::<SocketAddr>() {
            return Ok(ServerName::IpAddress(sa.ip().into()));
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.split_once(']')).map(|(a, _)| a) {
            v6
        } else {
            match host.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => host,
            }
        };
        ServerName::try_from(name.to_string())
            .map_err(|_| format!("host {name:?} is neither a DNS name nor an address"))
    }

    /// No certificate verification (see [`connect`]); the handshake's signatures are checked
    /// with the provider's algorithms all the same.
    #[derive(Debug)]
    struct AnyCert(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// `exec`: run `hc.command` for the real server at `addr` (see [`run_program`]), with
/// `FERROVS_SERVICE`, `FERROVS_SERVER` (the address) and `FERROVS_PORT` in its environment.
fn exec_check(hc: &HealthCheck, service: &str, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    if hc.command.is_empty() {
        return Err("exec check without a command".into());
    }
    let env = [
        ("FERROVS_SERVICE", service.to_string()),
        ("FERROVS_SERVER", addr.ip().to_string()),
        ("FERROVS_PORT", addr.port().to_string()),
    ];
    run_program(&hc.command, hc.user.as_deref(), &env, timeout)
}

/// Run `argv` (an absolute program path and its arguments; no shell), as `user` (its uid and
/// primary group, looked up now: a user that does not exist is an error) or the daemon's
/// user, with the daemon's environment plus `env`; stdin, stdout and stderr are /dev/null,
/// so a chatty script never blocks on a pipe nobody reads. Exit status 0 is success. The
/// program leads a process group of its own: at `timeout` the whole group (the script and
/// what it started) gets SIGKILL, and the program is reaped. The group is killed before the
/// reaping, while its number cannot belong to anybody else. Used by exec checks and by the
/// notify programs ([`crate::ctl::notify`]).
pub(crate) fn run_program(
    argv: &[String],
    user: Option<&str>,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Some((prog, args)) = argv.split_first() else {
        return Err("no program to run".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let as_user = match user {
        Some(u) => {
            let (uid, gid) = user_ids(u)?;
            // std drops the supplementary groups when it changes the uid as root.
            cmd.uid(uid).gid(gid);
            format!(" as user {u}")
        }
        None => String::new(),
    };
    let deadline = Instant::now() + timeout;
    let mut child = cmd.spawn().map_err(|e| format!("run {prog}{as_user}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let kill_group = |child: &mut std::process::Child| {
        // SAFETY: kill(2) with a process group this thread created and has not reaped yet.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return exit_result(prog, st),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("wait for {prog}: {e}"));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            return Err(format!("{prog} timed out after {} s: killed", timeout.as_secs_f64()));
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// An exec check's result from its program's exit status.
fn exit_result(prog: &str, st: std::process::ExitStatus) -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt;
    if st.success() {
        return Ok(());
    }
    match (st.code(), st.signal()) {
        (Some(c), _) => Err(format!("{prog} exited with status {c}")),
        (None, Some(sig)) => Err(format!("{prog} killed by signal {sig}{}", signal_name(sig))),
        _ => Err(format!("{prog} failed: {st}")),
    }
}

/// " (SIGNAME)" for the usual signals, else nothing.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGQUIT => " (SIGQUIT)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGALRM => " (SIGALRM)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

/// The uid and primary gid of user `name` (getpwnam_r: the system's user database, NSS
/// included), or why not.
fn user_ids(name: &str) -> Result<(u32, u32), String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("user {name:?}: holds a NUL byte"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain data; getpwnam_r writes it and its strings into `buf`, whose
        // length it is given, and `res` points to `pw` or is null.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!("user {name:?}: look-up failed: {}", std::io::Error::from_raw_os_error(rc)));
        }
        if res.is_null() {
            return Err(format!("user {name:?} does not exist"));
        }
        return Ok((pw.pw_uid, pw.pw_gid));
    }
}

/// The status code of an HTTP response's status line (`HTTP/1.x NNN ...`), read from `s`
/// before `deadline` (the line at most 1 KiB: a server that sends more without a line end
/// fails), and the bytes read past the line.
fn http_status<S: Stream>(s: &mut S, deadline: Instant) -> Result<(u16, Vec<u8>), String> {
    let mut got: Vec<u8> = Vec::new();
    let mut b = [0u8; 1024];
    let end = loop {
        if let Some(p) = got.iter().position(|&c| c == b'\n') {
            break p;
        }
        if got.len() > 1024 {
            return Err("HTTP status line too long".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out reading the HTTP status line".into());
        }
        s.tcp().set_read_timeout(Some(left)).ok();
        match s.read(&mut b) {
            Ok(0) => return Err("connection closed before the HTTP status line".into()),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let code = status_line(&got[..end])?;
    Ok((code, got.split_off(end + 1)))
}

/// The status code of an HTTP status line (`HTTP/1.x NNN [reason]`, its line end cut off or
/// not; RFC 9112 section 4), or why it is not one.
fn status_line(line: &[u8]) -> Result<u16, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // "HTTP/" DIGIT "." DIGIT SP 3DIGIT [SP reason] (RFC 9112 4).
    let bad = || format!("bad HTTP status line {:?}", String::from_utf8_lossy(&line[..line.len().min(64)]));
    match line {
        [b'H', b'T', b'T', b'P', b'/', a, b'.', c, b' ', d0, d1, d2, rest @ ..]
            if a.is_ascii_digit()
                && c.is_ascii_digit()
                && [d0, d1, d2].iter().all(|d| d.is_ascii_digit())
                && (rest.is_empty() || rest[0] == b' ') =>
        {
            let code = u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0');
            if (100..600).contains(&code) {
                Ok(code)
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

struct LineReader {
    buf: Vec<u8>,
    /// The protocol whose replies these are ("FTP", "SMTP"), for the errors.
    proto: &'static str,
}

impl LineReader {
    fn new(proto: &'static str) -> LineReader {
        LineReader { buf: Vec::new(), proto }
    }

    /// Read one (possibly multi-line) reply: a code, and for more lines a `-` after it until
    /// a line with the same code and a space (FTP, RFC 959; SMTP, RFC 5321); return its code.
    /// The whole reply must arrive before `deadline`: a server that keeps sending
    /// continuation lines never lets a read timeout fire.
    fn reply(&mut self, s: &mut TcpStream, deadline: Instant) -> Result<u32, String> {
        let proto = self.proto;
        let mut first: Option<u32> = None;
        loop {
            while let Some(p) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                let l = String::from_utf8_lossy(&line);
                let code = l.get(..3).and_then(|c| c.parse::<u32>().ok());
                match (first, code) {
                    (None, Some(c)) => {
                        if l.as_bytes().get(3) != Some(&b'-') {
                            return Ok(c);
                        }
                        first = Some(c);
                    }
                    (None, None) => return Err(format!("bad {proto} reply {:?}", l.trim_end())),
                    (Some(f), Some(c)) if c == f && l.as_bytes().get(3) == Some(&b' ') => return Ok(c),
                    _ => {}
                }
            }
            if self.buf.len() > 16384 {
                return Err(format!("{proto} reply too long"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out reading the {proto} reply"));
            }
            let mut b = [0u8; 1024];
            s.set_read_timeout(Some(left)).ok();
            match s.read(&mut b) {
                Ok(0) => return Err(format!("connection closed before the {proto} reply")),
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Seconds to a server's next check, after the one that left it `up` with `fail_run`
/// failures in a row: `retry_interval` while failures are being confirmed (the server up,
/// failing, not yet `fall` times), else `interval` (keepalived's `delay_before_retry` and
/// `delay_loop`).
fn next_check_in(hc: &HealthCheck, up: bool, fail_run: u32) -> f64 {
    match hc.retry_interval {
        Some(r) if up && fail_run > 0 => r,
        _ => hc.interval,
    }
}

/// Start the health checker thread.
pub fn spawn(state: Arc<dyn HealthTarget>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("fvs-health".into()).spawn(move || run(state, stop))
}

/// The real servers `cfg` has checked, with their checks and the address each goes to. A
/// connecting check needs a port (the check's, the server's, else the service's): without
/// one that check does not run for the server (a server of an all-ports service), and a
/// server left with none is not checked. An `exec` check connects to nothing and a `ping`
/// to no port: they run for every server (`FERROVS_PORT` is then 0).
pub(crate) fn checked_servers(cfg: &Config) -> HashMap<ServerKey, Vec<(HealthCheck, SocketAddr)>> {
    let mut want = HashMap::new();
    for s in &cfg.services {
        for r in &s.real_servers {
            let shown = crate::ctl::ipvsadm::shown_port(s, r.port);
            let mut checks = Vec::new();
            for hc in r.checks(&s.health_checks) {
                let port = hc.port.or(r.port).unwrap_or(crate::ctl::ipvsadm::service_port(s));
                if port == 0 && hc.kind.needs_port() {
                    continue;
                }
                checks.push((hc.clone(), SocketAddr::new(hc.address.unwrap_or(r.address), port)));
            }
            if !checks.is_empty() {
                want.insert((s.name.clone(), r.address, shown), checks);
            }
        }
    }
    want
}

/// A checked real server: its checks and whether it is up (every check is).
struct Server {
    checks: Vec<Target>,
    up: bool,
}

impl Target {
    fn new(check: HealthCheck, addr: SocketAddr, up: bool) -> Target {
        Target {
            check,
            addr,
            next: Instant::now(),
            busy: false,
            ok_run: 0,
            fail_run: 0,
            up,
            checks: 0,
            failures: 0,
            last_error: None,
        }
    }
}

impl Server {
    /// The server as `ferrovsadm health` shows it: up while every check is; its checks
    /// and failures summed; the last error of its first failing check, else of its first
    /// check that had one (named by the check's type when the server has several).
    fn info(&self, k: &ServerKey) -> HealthInfo {
        let named = self.checks.len() > 1;
        let last_error =
            self.checks.iter().filter(|t| !t.up || t.fail_run > 0).chain(self.checks.iter()).find_map(|t| {
                let e = t.last_error.as_ref()?;
                Some(if named { format!("{}: {e}", t.check.kind.name()) } else { e.clone() })
            });
        HealthInfo {
            service: k.0.clone(),
            // The real server's address (a check may go to another), the first check's port.
            server: SocketAddr::new(k.1, self.checks.first().map_or(k.2, |t| t.addr.port())).to_string(),
            up: self.up,
            last_error,
            checks: self.checks.iter().map(|t| t.checks).sum(),
            failures: self.checks.iter().map(|t| t.failures).sum(),
        }
    }

    /// Take the server up or down when its checks say so (every check up, or not),
    /// reporting the change to `state`.
    fn settle(&mut self, k: &ServerKey, state: &dyn HealthTarget) {
        let up = self.checks.iter().all(|t| t.up);
        if up == self.up {
            return;
        }
        self.up = up;
        if up {
            tracing::info!(service = %k.0, server = %k.1, "health check: real server is up");
        } else {
            let failed = self.checks.iter().find(|t| !t.up);
            let kind = failed.map_or("", |t| t.check.kind.name());
            let error = failed.and_then(|t| t.last_error.as_deref()).unwrap_or("");
            tracing::warn!(service = %k.0, server = %k.1, check = kind, error, "health check: real server is down");
        }
        state.set_down(k, !up);
        state.server_event(k, up);
    }
}

/// How long an idle thread of the checker's pool waits for a check before it leaves.
const POOL_LINGER: Duration = Duration::from_secs(30);
/// The longest the checker waits for results before it looks for checks due again.
const ROUND: Duration = Duration::from_millis(50);
/// Late checks are logged at most this often.
const LATE_LOG_EVERY: Duration = Duration::from_secs(60);

fn run(state: Arc<dyn HealthTarget>, stop: Arc<AtomicBool>) {
    let mut servers: HashMap<ServerKey, Server> = HashMap::new();
    let (tx, rx) = mpsc::channel::<(ServerKey, usize, Result<(), String>)>();
    let mut cfg_seen = None;
    let stats = state.pool_stats().unwrap_or_default();
    let pool = pool::Pool::new(state.config().engine.health_check_threads as usize, stats.clone(), POOL_LINGER);
    let (mut late_seen, mut late_logged) = (0u64, None::<Instant>);
    let mut spawn_failed = false;
    while !stop.load(Ordering::Relaxed) {
        // Targets follow the administered configuration.
        let cfg = state.config();
        if cfg_seen.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &cfg)) {
            pool.set_cap(cfg.engine.health_check_threads as usize);
            let want = checked_servers(&cfg);
            // A server no longer checked leaves no state behind: were it held
            // down, a server added back later under the same key (started
            // "up" here) would never be put back.
            let gone: Vec<ServerKey> = servers.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
            for k in &gone {
                servers.remove(k);
                state.forget(k);
            }
            for (k, list) in want {
                match servers.get_mut(&k) {
                    Some(sv) => {
                        // A check kept at its place keeps its runs; one added starts as
                        // the server is; one removed no longer holds the server down.
                        sv.checks.truncate(list.len());
                        let n = sv.checks.len();
                        for (t, (hc, addr)) in sv.checks.iter_mut().zip(&list) {
                            t.check = hc.clone();
                            t.addr = *addr;
                        }
                        let up = sv.up;
                        sv.checks.extend(list.into_iter().skip(n).map(|(hc, addr)| Target::new(hc, addr, up)));
                        sv.settle(&k, &*state);
                    }
                    None => {
                        // Up, unless its service starts servers down (`start_down`) and the
                        // control state holds it down until `rise` successes of every check.
                        let up = !state.is_down(&k);
                        let checks = list.into_iter().map(|(hc, addr)| Target::new(hc, addr, up)).collect();
                        servers.insert(k, Server { checks, up });
                    }
                }
            }
            // Servers no longer checked must not stay held down.
            for s in &cfg.services {
                for r in &s.real_servers {
                    let k = (s.name.clone(), r.address, crate::ctl::ipvsadm::shown_port(s, r.port));
                    if !servers.contains_key(&k) {
                        state.set_down(&k, false);
                    }
                }
            }
            cfg_seen = Some(cfg);
        }

        // Checks due go to the pool, each at most once at a time (`busy`); those that find
        // every thread busy wait their turn there.
        let now = Instant::now();
        for (k, sv) in servers.iter_mut() {
            for (i, t) in sv.checks.iter_mut().enumerate() {
                if t.busy || t.next > now {
                    continue;
                }
                t.busy = true;
                let (hc, addr, key, tx) = (t.check.clone(), t.addr, k.clone(), tx.clone());
                pool.submit(t.next, move || {
                    let r = check(&hc, &key.0, addr);
                    let _ = tx.send((key, i, r));
                });
            }
        }
        // A check left waiting (a thread that could not be started, or one that left idle as
        // the check came) gets its thread now.
        match pool.grow() {
            Err(e) if !spawn_failed => {
                tracing::warn!(error = %e, "health check: cannot start a checker thread; checks wait");
                spawn_failed = true;
            }
            Err(_) => {}
            Ok(()) => spawn_failed = false,
        }
        let late = stats.late.load(Ordering::Relaxed);
        if late > late_seen && late_logged.is_none_or(|t: Instant| t.elapsed() >= LATE_LOG_EVERY) {
            tracing::warn!(
                late = late - late_seen,
                threads = stats.threads.load(Ordering::Relaxed),
                queued = stats.queued.load(Ordering::Relaxed),
                "health checks started a second or more late: every checker thread was busy \
                 (raise [engine] health_check_threads, or shorten the checks' timeouts)"
            );
            (late_seen, late_logged) = (late, Some(Instant::now()));
        }

        // Results until the round is over: with many checks they keep coming, and checks due
        // meanwhile must not wait for a lull.
        let round_end = Instant::now() + ROUND;
        while let Ok((k, i, r)) = rx.recv_timeout(round_end.saturating_duration_since(Instant::now())) {
            // A result for a check since removed (the configuration changed) is dropped.
            let Some(sv) = servers.get_mut(&k) else { continue };
            let Some(t) = sv.checks.get_mut(i) else { continue };
            t.busy = false;
            t.checks += 1;
            match r {
                Ok(()) => {
                    t.ok_run += 1;
                    t.fail_run = 0;
                    if !t.up && t.ok_run >= t.check.rise {
                        t.up = true;
                    }
                }
                Err(e) => {
                    t.failures += 1;
                    t.fail_run += 1;
                    t.ok_run = 0;
                    if t.up && t.fail_run >= t.check.fall {
                        t.up = false;
                    }
                    t.last_error = Some(e);
                }
            }
            t.next = Instant::now() + Duration::from_secs_f64(next_check_in(&t.check, t.up, t.fail_run).max(0.05));
            sv.settle(&k, &*state);
            state.set_health(&k, sv.info(&k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn hc(kind: HealthCheckKind, timeout: f64) -> HealthCheck {
        HealthCheck { interval: 1.0, timeout, rise: 1, fall: 1, ..HealthCheck::new(kind) }
    }

    /// A loopback "real server": `serve` gets each accepted connection.
    #[test]
    fn failures_are_confirmed_at_the_retry_interval() {
        let mut h = hc(HealthCheckKind::Tcp, 1.0);
        (h.interval, h.fall) = (60.0, 3);
        assert_eq!(next_check_in(&h, true, 1), 60.0, "no retry_interval: the interval");
        h.retry_interval = Some(2.0);
        assert_eq!(next_check_in(&h, true, 0), 60.0, "up and passing");
        assert_eq!(next_check_in(&h, true, 1), 2.0, "a first failure confirmed soon");
        assert_eq!(next_check_in(&h, true, 2), 2.0);
        assert_eq!(next_check_in(&h, false, 3), 60.0, "down: the interval");
        assert_eq!(next_check_in(&h, false, 0), 60.0, "down, passing again (rising)");
    }

    fn server(serve: impl Fn(TcpStream) + Send + 'static) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                serve(s);
            }
        });
        addr
    }

    /// Run a check on its own thread; `None` if it has not finished within `limit`.
    fn check_within(h: &HealthCheck, addr: SocketAddr, limit: Duration) -> Option<Result<(), String>> {
        let (tx, rx) = mpsc::channel();
        let h = h.clone();
        std::thread::spawn(move || {
            let _ = tx.send(check(&h, "svc", addr));
        });
        rx.recv_timeout(limit).ok()
    }

    /// An FTP server that never ends its multi-line banner (`220-` lines as
    /// fast as it can): every read returns data at once, so read timeouts
    /// never fire; the check must still end at its timeout (the check's
    /// thread would otherwise be held, and the server never checked again).
    #[test]
    fn an_endless_multi_line_ftp_banner_ends_at_the_timeout() {
        let addr = server(|mut s| {
            let lines = b"220-still welcoming you\r\n".repeat(4096);
            std::thread::spawn(move || while s.write_all(&lines).is_ok() {});
        });
        let t0 = Instant::now();
        let r = check_within(&hc(HealthCheckKind::Ftp, 0.3), addr, Duration::from_secs(5));
        let r = r.expect("the FTP check was still running 5 s after its 0.3 s timeout");
        assert!(r.is_err(), "an unfinished banner is a failure");
        assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    }

    /// Real FTP servers' banners and USER replies pass: vsftpd (one line),
    /// proftpd, and a multi-line RFC 959 banner with continuation lines that do
    /// and do not start with the code (pure-ftpd style).
    #[test]
    fn real_ftp_banners_pass() {
        for banner in [
            &b"220 (vsFTPd 3.0.3)\r\n"[..],
            b"220 ProFTPD Server (Debian) [::ffff:10.0.2.2]\r\n",
            b"220---------- Welcome to Pure-FTPd [privsep] ----------\r\n220-You are user number 1 of 50.\r\n \
              a line without a code\r\n220 You will be disconnected after 15 minutes of inactivity.\r\n",
        ] {
            let addr = server(move |mut s| {
                let _ = s.write_all(banner);
                let mut b = [0u8; 256];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"331 Please specify the password.\r\n");
            });
            let r = check_within(&hc(HealthCheckKind::Ftp, 2.0), addr, Duration::from_secs(5)).expect("finished");
            assert_eq!(r, Ok(()), "{}", String::from_utf8_lossy(banner));
        }
    }

    /// An SMTP server on loopback that greets with `greeting`, answers the first command line
    /// with `helo_reply` and QUIT with 221; the command lines it got come out of the receiver.
    fn smtp_server(greeting: &'static [u8], helo_reply: &'static [u8]) -> (SocketAddr, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let addr = server(move |mut s| {
            let _ = s.write_all(greeting);
            let mut got = Vec::new();
            let mut b = [0u8; 512];
            for reply in [helo_reply, &b"221 bye\r\n"[..]] {
                let start = got.len();
                while !got[start..].ends_with(b"\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                let _ = tx.lock().unwrap().send(String::from_utf8_lossy(&got[start..]).into_owned());
                let _ = s.write_all(reply);
            }
        });
        (addr, rx)
    }

    /// `smtp`: a 220 greeting (one line or several, RFC 5321), `HELO` with `helo_name` (else
    /// this host's name) answered 250, then QUIT; another greeting or HELO reply fails naming
    /// it, a non-reply fails, and nothing is sent after a wrong greeting.
    #[test]
    fn smtp_greeting_helo_and_quit() {
        let mut h = hc(HealthCheckKind::Smtp, 2.0);
        h.helo_name = Some("lb1.example.net".into());
        let run = |h: &HealthCheck, greeting: &'static [u8], helo: &'static [u8]| {
            let (addr, rx) = smtp_server(greeting, helo);
            let r = check_within(h, addr, Duration::from_secs(5)).expect("finished");
            (r, rx.recv_timeout(Duration::from_millis(500)).ok(), rx.recv_timeout(Duration::from_millis(500)).ok())
        };
        let (r, helo, quit) = run(&h, b"220 mx.example.com ESMTP Postfix\r\n", b"250 mx.example.com\r\n");
        assert_eq!(r, Ok(()));
        assert_eq!(helo.as_deref(), Some("HELO lb1.example.net\r\n"));
        assert_eq!(quit.as_deref(), Some("QUIT\r\n"));
        let multi = b"220-mx.example.com ESMTP\r\n220-no UCE\r\n220 ready\r\n";
        assert_eq!(run(&h, multi, b"250 hi\r\n").0, Ok(()));
        let (r, helo, _) = run(&h, b"554 no service for you\r\n", b"250 x\r\n");
        assert_eq!(r, Err("SMTP greeting 554, expected 220".into()));
        assert_eq!(helo, None, "nothing sent after a refusal");
        assert_eq!(run(&h, b"220 ok\r\n", b"501 bad name\r\n").0, Err("SMTP HELO reply 501, expected 250".into()));
        assert_eq!(run(&h, b"SSH-2.0-OpenSSH_9.2\r\n", b"").0, Err("bad SMTP reply \"SSH-2.0-OpenSSH_9.2\"".into()));
        let (r, helo, _) = run(&hc(HealthCheckKind::Smtp, 2.0), b"220 ok\r\n", b"250 ok\r\n");
        assert_eq!(r, Ok(()));
        assert_eq!(helo, Some(format!("HELO {}\r\n", host_name())), "this host's name by default");
        assert!(!host_name().is_empty() && !host_name().contains(' '));
    }

    /// `smtp` against a real SMTP server: Python's `smtpd` (its stdlib up to 3.11, the
    /// Debian python3 the lab uses), on loopback.
    #[test]
    fn smtp_check_against_python_smtpd() {
        let py = "/usr/bin/python3";
        let has = std::process::Command::new(py)
            .args(["-W", "ignore", "-c", "import smtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has {
            assert!(std::env::var_os("CI").is_none(), "/usr/bin/python3 with smtpd missing (scripts/install-deps)");
            eprintln!("no /usr/bin/python3 with smtpd: skipped");
            return;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new(py)
            .args(["-W", "ignore", "-m", "smtpd", "-n", "-c", "DebuggingServer", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start smtpd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut h = hc(HealthCheckKind::Smtp, 2.0);
        h.helo_name = Some("lb1.example.net".into());
        let t0 = Instant::now();
        let mut r = check(&h, "svc", addr);
        while r.is_err() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            r = check(&h, "svc", addr);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(r, Ok(()));
        let e = check(&h, "svc", addr).unwrap_err();
        assert!(e.starts_with("connect 127.0.0.1:"), "stopped: {e}");
    }

    /// An HTTP server on loopback answering every request with `reply`; the requests it got
    /// come out of the receiver.
    fn http_server(reply: &'static [u8]) -> (SocketAddr, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let addr = server(move |mut s| {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let _ = tx.lock().unwrap().send(String::from_utf8_lossy(&req).into_owned());
            let _ = s.write_all(reply);
        });
        (addr, rx)
    }

    /// `digest`: the MD5 of the bytes after the header's empty line (CRLF or bare LF), in any
    /// case; checked only once the status is right; a wrong one names what came.
    #[test]
    fn http_digest_of_the_body() {
        // printf 'ok\n' | md5sum
        const OK: &str = "eff5bc1ef8ec9d03e640fc4370f5eacd";
        let mut h = hc(HealthCheckKind::Http, 2.0);
        let run = |h: &HealthCheck, reply: &'static [u8]| {
            let (addr, _rx) = http_server(reply);
            check_within(h, addr, Duration::from_secs(5)).expect("finished")
        };
        h.digest = Some(OK.into());
        assert_eq!(run(&h, b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"), Ok(()));
        assert_eq!(run(&h, b"HTTP/1.1 200 OK\nServer: x\n\nok\n"), Ok(()), "bare LF header");
        h.digest = Some(OK.to_ascii_uppercase());
        assert_eq!(run(&h, b"HTTP/1.0 200 OK\r\n\r\nok\n"), Ok(()), "the digest in any case");
        assert_eq!(run(&h, b"HTTP/1.0 200 OK\r\n\r\nok!\n"), Err(md5_mismatch(b"ok!\n", &OK.to_ascii_uppercase())));
        assert_eq!(run(&h, b"HTTP/1.0 500 Oops\r\n\r\nok\n"), Err("HTTP status 500, expected 2xx".into()));
        assert_eq!(run(&h, b"HTTP/1.0 200 OK\r\nX: y\r\n"), Err("connection closed in the HTTP header".into()));
    }

    /// What a digest check says of a body `body` against `want`, with the MD5 from coreutils'
    /// md5sum (a tool independent of the check's code).
    fn md5_mismatch(body: &[u8], want: &str) -> String {
        use std::io::Write as _;
        let mut p = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("md5sum");
        p.stdin.take().unwrap().write_all(body).unwrap();
        let out = String::from_utf8(p.wait_with_output().unwrap().stdout).unwrap();
        format!("body MD5 {}, expected {want}", out.split_whitespace().next().unwrap())
    }

    #[test]
    fn http_status_and_request() {
        let mut h = hc(HealthCheckKind::Http, 2.0);
        let run = |h: &HealthCheck, reply: &'static [u8]| {
            let (addr, rx) = http_server(reply);
            let r = check_within(h, addr, Duration::from_secs(5)).expect("finished");
            (r, rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default(), addr)
        };
        // Any 2xx by default; the request names the path and the server as Host.
        let (r, req, addr) = run(&h, b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(r, Ok(()));
        assert!(req.starts_with("GET / HTTP/1.0\r\n"), "{req:?}");
        assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req:?}");
        for bad in [
            &b"HTTP/1.1 503 Service Unavailable\r\n\r\n"[..],
            b"HTTP/1.0 301 Moved\r\n",
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 2000 x\r\n",
            b"",
        ] {
            let (addr, _rx) = http_server(bad);
            let r = check_within(&h, addr, Duration::from_secs(5)).expect("finished");
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A set status, path and Host.
        h.status = Some(404);
        h.path = Some("/healthz?x=1".into());
        h.host = Some("www.example.com".into());
        let (r, req, _) = run(&h, b"HTTP/1.0 404 Not Found\r\n\r\n");
        assert_eq!(r, Ok(()));
        assert!(req.starts_with("GET /healthz?x=1 HTTP/1.0\r\nHost: www.example.com\r\n"), "{req:?}");
        let (r, _, _) = run(&h, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(r, Err("HTTP status 200, expected 404".into()));
    }

    proptest::proptest! {
        /// Any bytes a server sends as its status line: a code or an error, never a panic;
        /// a well-formed line gives its code.
        #[test]
        fn status_lines_never_panic(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let _ = status_line(&line);
        }
        #[test]
        fn well_formed_status_lines_give_their_code(
            major in 0u8..10, minor in 0u8..10, code in 100u16..600, reason in "[ -~]{0,20}"
        ) {
            let line = format!("HTTP/{major}.{minor} {code} {reason}\r");
            proptest::prop_assert_eq!(status_line(line.as_bytes()), Ok(code));
        }
        /// Any datagram a server sends back to a DNS query: never a panic, and taken as the
        /// answer only with the query's id and question.
        #[test]
        fn dns_datagrams_never_panic(
            r in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            id in proptest::prelude::any::<u16>(),
            echo in proptest::prelude::any::<bool>(),
        ) {
            let q = dns::query(id, "a.example", 1);
            let mut r = r;
            if echo && r.len() >= 12 {
                // Most of the time the header's id and question count and the question match,
                // so the flags and the rest are what varies.
                r[..2].copy_from_slice(&id.to_be_bytes());
                r[4..6].copy_from_slice(&[0, 1]);
                r.splice(12.., q[12..].iter().copied());
            }
            if let Some(code) = dns::answer_code(&r, &q) {
                proptest::prop_assert!(r[..2] == q[..2] && r[2] & 0x80 != 0 && code == r[3] & 0x0f);
                proptest::prop_assert!(r.get(12..q.len()).is_some_and(|x| x.eq_ignore_ascii_case(&q[12..])));
            }
        }
        /// Any datagram an ICMP socket delivers (raw or ping, IPv4 or IPv6): never a panic;
        /// taken as the echo's reply only with its sequence number and token (and, raw, its
        /// identifier).
        #[test]
        fn icmp_datagrams_never_panic(
            d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            v6 in proptest::prelude::any::<bool>(),
            raw in proptest::prelude::any::<bool>(),
            mostly_ours in proptest::prelude::any::<bool>(),
        ) {
            let (id, seq, token) = ([0x12, 0x34], [0x56, 0x78], [0xabu8; 16]);
            let mut d = d;
            let off = if raw && !v6 { 20 } else { 0 };
            if mostly_ours && d.len() >= off + 8 {
                // An echo reply's header with our numbers, the rest (and the type) varying.
                if off > 0 {
                    d[0] = 0x45;
                }
                d[off + 4..off + 8].copy_from_slice(&[id[0], id[1], seq[0], seq[1]]);
            }
            if let Some(Ok(())) = ping::answer(&d, v6, raw, id, seq, &token) {
                let m = &d[off..];
                proptest::prop_assert_eq!(m[0], if v6 { 129 } else { 0 });
                proptest::prop_assert!(m[6..8] == seq && (!raw || m[4..6] == id) && m[8..] == token);
            }
        }
        /// The udp check's reply matching, against a byte-by-byte model: every octet's bits
        /// under the mask equal, the answer at least as long.
        #[test]
        fn udp_reply_matching_is_the_masked_compare(
            got in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            want in proptest::collection::vec((proptest::prelude::any::<u8>(), proptest::prelude::any::<u8>()), 1..8),
        ) {
            let (w, m): (Vec<u8>, Vec<u8>) = want.into_iter().unzip();
            let model = got.len() >= w.len() && (0..w.len()).all(|i| got[i] & m[i] == w[i] & m[i]);
            proptest::prop_assert_eq!(udp::answer_matches(&got, &w, &m), model);
        }
    }

    /// A server that sends an endless status line, or nothing: the check ends at its timeout.
    #[test]
    fn http_check_ends_at_the_timeout() {
        let h = hc(HealthCheckKind::Http, 0.3);
        for endless in [true, false] {
            let addr = server(move |mut s| {
                std::thread::spawn(move || {
                    let junk = [b'x'; 512];
                    while endless && s.write_all(&junk).is_ok() {}
                    std::thread::sleep(Duration::from_secs(3));
                });
            });
            let t0 = Instant::now();
            let r = check_within(&h, addr, Duration::from_secs(5)).expect("finished");
            assert!(r.is_err());
            assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
        }
    }

    /// A real nginx on loopback (the lab's HTTP server) serving `healthz` ("ok") from a
    /// directory of its own, with the `server` blocks `servers` gives for that directory;
    /// stopped and its directory removed when dropped. `None` (outside CI) without nginx.
    struct Nginx {
        child: std::process::Child,
        dir: std::path::PathBuf,
    }

    impl Nginx {
        fn start(tag: &str, servers: impl Fn(&str) -> String, ports: &[u16]) -> Option<Nginx> {
            let Some(nginx) =
                ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())
            else {
                assert!(std::env::var_os("CI").is_none(), "nginx missing (scripts/install-deps installs it)");
                eprintln!("nginx not installed: skipped (scripts/install-deps installs it)");
                return None;
            };
            let dir = std::env::temp_dir().join(format!("ferrovs-health-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("www")).unwrap();
            std::fs::write(dir.join("www/healthz"), "ok\n").unwrap();
            let d = dir.display().to_string();
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n \
                 client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fcgi;\n \
                 uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{}\n}}\n",
                servers(&d)
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let child = std::process::Command::new(nginx)
                .args(["-c", &format!("{d}/nginx.conf"), "-e", &format!("{d}/error.log")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start nginx");
            let t0 = Instant::now();
            for &port in ports {
                while TcpStream::connect(("127.0.0.1", port)).is_err() && t0.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Some(Nginx { child, dir })
        }
    }

    impl Drop for Nginx {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// The check against a real nginx on loopback (the lab's HTTP server): its default
    /// answers, a 404 for a path it does not have, and a status set to match.
    #[test]
    fn http_check_against_nginx() {
        let port = free_port();
        let servers = |d: &str| format!(" server {{\n  listen 127.0.0.1:{port};\n  root {d}/www;\n }}");
        let Some(_nginx) = Nginx::start("http", servers, &[port]) else { return };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut h = hc(HealthCheckKind::Http, 2.0);
        h.path = Some("/healthz".into());
        assert_eq!(check(&h, "svc", addr), Ok(()));
        h.path = Some("/missing".into());
        assert_eq!(check(&h, "svc", addr), Err("HTTP status 404, expected 2xx".into()));
        h.status = Some(404);
        assert_eq!(check(&h, "svc", addr), Ok(()));
        // keepalived's digest of the page (printf 'ok\n' | md5sum).
        h.status = None;
        h.path = Some("/healthz".into());
        h.digest = Some("eff5bc1ef8ec9d03e640fc4370f5eacd".into());
        assert_eq!(check(&h, "svc", addr), Ok(()));
        h.digest = Some("00000000000000000000000000000000".into());
        assert_eq!(
            check(&h, "svc", addr),
            Err("body MD5 eff5bc1ef8ec9d03e640fc4370f5eacd, expected 00000000000000000000000000000000".into())
        );
    }

    /// `openssl` with `args` in `dir`.
    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/install-deps installs it)");
        assert!(st.success(), "openssl {args:?}");
    }

    /// A CA `NAME.pem` (key `NAME.key`) made by openssl in `dir`.
    fn test_ca(dir: &std::path::Path, name: &str) {
        let (key, pem, cn) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN=ferrovs test {name}"));
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(dir, &["req", "-x509", "-new", "-key", &key, "-out", &pem, "-days", "2", "-subj", &cn]);
    }

    /// `https` against a real nginx with a certificate from a test CA for www.example.test and
    /// 127.0.0.1: unverified (keepalived's SSL_GET), verified with `tls_ca` for `host` or the
    /// server's address, refused for another name or another CA, and against a plain HTTP
    /// port (no handshake).
    #[test]
    fn https_check_against_nginx() {
        let (tls_port, plain_port) = (free_port(), free_port());
        let pki = std::env::temp_dir().join(format!("ferrovs-health-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&pki);
        std::fs::create_dir_all(&pki).unwrap();
        test_ca(&pki, "ca");
        test_ca(&pki, "other");
        openssl(&pki, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "srv.key"]);
        openssl(&pki, &["req", "-new", "-key", "srv.key", "-out", "srv.csr", "-subj", "/CN=www.example.test"]);
        std::fs::write(pki.join("ext.cnf"), "subjectAltName=DNS:www.example.test,IP:127.0.0.1\n").unwrap();
        openssl(
            &pki,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let p = pki.display().to_string();
        let servers = |d: &str| {
            format!(
                " server {{\n  listen 127.0.0.1:{tls_port} ssl;\n  ssl_certificate {p}/srv.pem;\n  \
                 ssl_certificate_key {p}/srv.key;\n  root {d}/www;\n }}\n \
                 server {{\n  listen 127.0.0.1:{plain_port};\n  root {d}/www;\n }}"
            )
        };
        let nginx = Nginx::start("https", servers, &[tls_port, plain_port]);
        let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
        let mut h = hc(HealthCheckKind::Https, 2.0);
        h.path = Some("/healthz".into());
        let mut got = Vec::new();
        if nginx.is_some() {
            got.push(check(&h, "svc", addr));
            h.path = Some("/missing".into());
            got.push(check(&h, "svc", addr));
            h.path = Some("/healthz".into());
            h.tls_ca = Some(format!("{p}/ca.pem"));
            got.push(check(&h, "svc", addr));
            h.host = Some("www.example.test".into());
            got.push(check(&h, "svc", addr));
            h.host = Some("other.example.test".into());
            got.push(check(&h, "svc", addr));
            h.host = Some("www.example.test".into());
            h.tls_ca = Some(format!("{p}/other.pem"));
            got.push(check(&h, "svc", addr));
            h.tls_ca = Some(format!("{p}/missing.pem"));
            got.push(check(&h, "svc", addr));
            h.tls_ca = None;
            got.push(check(&h, "svc", format!("127.0.0.1:{plain_port}").parse().unwrap()));
            // The page's digest over TLS.
            h.digest = Some("eff5bc1ef8ec9d03e640fc4370f5eacd".into());
            got.push(check(&h, "svc", addr));
        }
        drop(nginx);
        let _ = std::fs::remove_dir_all(&pki);
        if got.is_empty() {
            return;
        }
        assert_eq!(got[0], Ok(()), "not verified: any certificate");
        assert_eq!(got[1], Err("HTTP status 404, expected 2xx".into()));
        assert_eq!(got[2], Ok(()), "verified for the server's address (IP SAN)");
        assert_eq!(got[3], Ok(()), "verified for host (DNS SAN, sent as SNI)");
        let err = |i: usize| got[i].clone().expect_err("fails");
        assert!(
            err(4).starts_with("TLS handshake: ")
                && err(4).contains("certificate not valid for name \"other.example.test\""),
            "{}",
            err(4)
        );
        assert!(err(5).starts_with("TLS handshake: ") && err(5).contains("UnknownIssuer"), "{}", err(5));
        assert!(err(6).starts_with(&format!("tls_ca {p}/missing.pem: ")), "{}", err(6));
        assert!(err(7).starts_with("TLS handshake: "), "a plain HTTP port: {}", err(7));
        assert_eq!(got[8], Ok(()), "the body's digest over TLS");
    }

    /// The DNS query and the answers taken as its answer (fixture table): the same id, the
    /// response bit, the question echoed (any case); anything else is not the answer.
    #[test]
    fn dns_query_and_answers() {
        let q = dns::query(0xbeef, "www.Example.com.", 28);
        let want_q: &[u8] =
            b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07Example\x03com\x00\x00\x1c\x00\x01";
        assert_eq!(q, want_q);
        assert_eq!(dns::query(1, ".", 6)[12..], [0, 0, 6, 0, 1]);
        let answer = |id: u16, flags: [u8; 2], qd: u8, question: &[u8]| {
            let mut r = id.to_be_bytes().to_vec();
            r.extend_from_slice(&flags);
            r.extend_from_slice(&[0, qd, 0, 1, 0, 0, 0, 0]);
            r.extend_from_slice(question);
            r.extend_from_slice(&[0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
            r.extend_from_slice(&[0u8; 16]);
            r
        };
        let question = &q[12..];
        let upper: Vec<u8> = question.to_ascii_uppercase();
        let cases: &[(&str, Vec<u8>, Option<u8>)] = &[
            ("NOERROR", answer(0xbeef, [0x81, 0x80], 1, question), Some(0)),
            ("the name in another case", answer(0xbeef, [0x85, 0x80], 1, &upper), Some(0)),
            ("REFUSED", answer(0xbeef, [0x81, 0x85], 1, question), Some(5)),
            ("NXDOMAIN", answer(0xbeef, [0x81, 0x83], 1, question), Some(3)),
            ("another id", answer(0xbeee, [0x81, 0x80], 1, question), None),
            ("a query, not an answer", answer(0xbeef, [0x01, 0x80], 1, question), None),
            ("no question", answer(0xbeef, [0x81, 0x80], 0, &[]), None),
            ("another question", answer(0xbeef, [0x81, 0x80], 1, &dns::query(0, "www.example.org", 28)[12..]), None),
            ("cut in the header", answer(0xbeef, [0x81, 0x80], 1, question)[..11].to_vec(), None),
            ("cut in the question", answer(0xbeef, [0x81, 0x80], 1, question)[..20].to_vec(), None),
        ];
        for (what, r, want) in cases {
            assert_eq!(dns::answer_code(r, &q), *want, "{what}");
        }
    }

    /// A server that answers with a stray datagram first (another id), then the answer: the
    /// stray one is passed over; and a port nobody listens on fails at once (ICMP port
    /// unreachable), a server that never answers at the timeout.
    #[test]
    fn dns_check_strays_refusals_and_silence() {
        let srv = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = srv.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            for _ in 0..2 {
                let Ok((n, from)) = srv.recv_from(&mut b) else { return };
                let mut r = b[..n].to_vec();
                r[2] |= 0x80;
                let mut stray = r.clone();
                stray[1] ^= 1;
                srv.send_to(&stray, from).unwrap();
                srv.send_to(&r, from).unwrap();
            }
        });
        let mut h = hc(HealthCheckKind::Dns, 2.0);
        assert_eq!(check(&h, "svc", addr), Ok(()));
        h.query_name = Some("www.example.com".into());
        h.query_type = Some("MX".into());
        assert_eq!(check(&h, "svc", addr), Ok(()));
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let t0 = Instant::now();
        let r = check(&hc(HealthCheckKind::Dns, 2.0), "svc", closed);
        assert!(r.as_ref().is_err_and(|e| e.contains("refused")), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = check(&hc(HealthCheckKind::Dns, 0.3), "svc", silent.local_addr().unwrap());
        assert_eq!(r, Err("no DNS answer".into()));
    }

    /// A dnsmasq on a free loopback port that answers `www.example.test` (A 10.0.0.7) and
    /// refuses the rest (no upstream servers); `None` (the test skipped) where it is not
    /// installed, outside CI.
    fn dnsmasq() -> Option<(std::process::Child, SocketAddr)> {
        let Some(dnsmasq) =
            ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].into_iter().find(|p| std::path::Path::new(p).exists())
        else {
            assert!(std::env::var_os("CI").is_none(), "dnsmasq missing (scripts/install-deps installs it)");
            eprintln!("dnsmasq not installed: skipped (scripts/install-deps installs it)");
            return None;
        };
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(dnsmasq)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--pid-file=",
                "--address=/www.example.test/10.0.0.7",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        Some((child, format!("127.0.0.1:{port}").parse().unwrap()))
    }

    /// A `udp` check of `payload` (hex) requiring `reply` (hex, `Some("")`: any answer).
    fn udp_hc(payload: Option<&str>, reply: Option<&str>, timeout: f64) -> HealthCheck {
        let mut h = hc(HealthCheckKind::Udp, timeout);
        h.payload = payload.map(str::to_string);
        h.require_reply = reply.is_some();
        h.reply = reply.filter(|r| !r.is_empty()).map(str::to_string);
        h
    }

    /// The `udp` check against a real dnsmasq on loopback, its payload a DNS query in hex (as
    /// keepalived users write one): an answer that starts as `reply` says (the id and flags
    /// wildcards, one question, one answer) is up, another is down naming what came; any
    /// answer passes `require_reply`; an empty datagram (which dnsmasq ignores) is up without
    /// `require_reply` (nothing refused it) and down with it; a closed port is down at once
    /// (port unreachable), with and without `require_reply`.
    #[test]
    fn udp_check_against_dnsmasq() {
        let Some((mut child, addr)) = dnsmasq() else { return };
        let q = dns::query(0x1234, "www.example.test", 1);
        let query: String = q.iter().map(|b| format!("{b:02x}")).collect();
        // Until dnsmasq listens (refused until then).
        let t0 = Instant::now();
        while check(&udp_hc(Some(&query), Some(""), 1.0), "svc", addr).is_err()
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let run = |h: HealthCheck| check(&h, "svc", addr);
        let answered = run(udp_hc(Some(&query), Some("1234 xxxx 0001 0001"), 1.0));
        let any = run(udp_hc(Some(&query), Some(""), 1.0));
        let spaced = query.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ");
        let wrong = run(udp_hc(Some(&spaced), Some("1234 xxxx 0001 0002"), 1.0));
        let t0 = Instant::now();
        let quiet = run(udp_hc(None, None, 0.3));
        let quiet_took = t0.elapsed();
        let unanswered = run(udp_hc(None, Some(""), 0.3));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(answered, Ok(()));
        assert_eq!(any, Ok(()));
        let e = wrong.unwrap_err();
        assert!(e.starts_with("answer 12 34 ") && e.ends_with("does not start with 1234 xxxx 0001 0002"), "{e}");
        assert_eq!(quiet, Ok(()), "nothing refused the datagram within the timeout");
        assert!(quiet_took >= Duration::from_millis(300), "waited the timeout out: {quiet_took:?}");
        assert_eq!(unanswered, Err("no UDP answer".into()));
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        for reply in [None, Some("")] {
            let t0 = Instant::now();
            assert_eq!(check(&udp_hc(Some("00"), reply, 2.0), "svc", closed), Err("port unreachable".into()));
            assert!(t0.elapsed() < Duration::from_secs(1), "refused at once: {:?}", t0.elapsed());
        }
    }

    /// `min_reply_length` / `max_reply_length`: an echo server's answer (the payload, 4
    /// octets) passes bounds that hold 4 and fails others, naming its size.
    #[test]
    fn udp_reply_lengths() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let run = |min: Option<u16>, max: Option<u16>| {
            let mut h = udp_hc(Some("0a 0b 0c 0d"), None, 1.0);
            (h.min_reply_length, h.max_reply_length) = (min, max);
            check(&h, "svc", addr)
        };
        assert_eq!(run(Some(4), Some(4)), Ok(()));
        assert_eq!(run(None, Some(100)), Ok(()));
        assert_eq!(run(Some(0), None), Ok(()));
        let e = run(Some(5), None).unwrap_err();
        assert_eq!(e, "answer of 4 octets, not 5..65535 (min_reply_length..max_reply_length)");
        let e = run(None, Some(3)).unwrap_err();
        assert!(e.starts_with("answer of 4 octets, not 0..3"), "{e}");
    }

    /// `reply` matching: a prefix, `x` nibbles matching any, a shorter answer failing.
    #[test]
    fn udp_reply_matching() {
        let m = |got: &[u8], reply: &str| {
            let (want, mask) = HealthCheck::hex_octets(reply, true).expect("hex");
            udp::answer_matches(got, &want, &mask)
        };
        assert!(m(&[0x12, 0x34, 0x56], "1234"));
        assert!(m(&[0x12, 0x34], "12 34"));
        assert!(m(&[0x1f, 0x34], "1x 34"));
        assert!(m(&[0xf2, 0x34], "x2 3x"));
        assert!(m(&[0xab, 0xcd], "xxXX"));
        assert!(!m(&[0x12], "1234"), "shorter than reply");
        assert!(!m(&[0x13, 0x34], "1234"));
        assert!(!m(&[0x2f, 0x34], "1x34"));
        assert!(m(&[0x0c], "c"), "a lone digit is an octet");
        assert!(!m(&[0x1c], "c"), "its high nibble zero");
        assert!(m(&[0x0c], "x") && !m(&[0x1c], "x"), "a lone x: the low nibble any, the high zero");
    }

    /// Run `f` on a thread of its own in a new network namespace (freed when the thread
    /// ends), set up first by the shell `script` run in it; `None` (skipped) when not root,
    /// outside CI.
    fn in_netns<T: Send + 'static>(script: &str, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs the tests as root");
            eprintln!("not root: no network namespace, skipped");
            return None;
        }
        let script = script.to_string();
        std::thread::spawn(move || {
            // SAFETY: unshare(2) of this thread's network namespace alone.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
            // A child runs in its parent thread's namespace.
            let o = std::process::Command::new("sh").args(["-ec", &script]).output().expect("sh");
            assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
            f()
        })
        .join()
        .ok()
    }

    fn has_ipv6() -> bool {
        std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty())
    }

    /// `ping` on the host's loopback (a raw socket as root, unless ping_group_range lets a
    /// ping socket be made), IPv4 and, where the host has it, IPv6.
    #[test]
    fn ping_loopback() {
        assert_eq!(check(&hc(HealthCheckKind::Ping, 2.0), "svc", "127.0.0.1:0".parse().unwrap()), Ok(()));
        if has_ipv6() {
            assert_eq!(check(&hc(HealthCheckKind::Ping, 2.0), "svc", "[::1]:0".parse().unwrap()), Ok(()));
        }
    }

    /// `ping` in a namespace of its own: over a ping socket (its ping_group_range opened to
    /// root) and over a raw one (closed again), the loopback answers; an address on a dummy
    /// link answers nothing (down at the timeout); one behind an `unreachable` route is down
    /// at once, naming why.
    #[test]
    fn ping_up_silent_and_unreachable() {
        let script = "ip link set lo up
            ip link add d0 type dummy
            ip link set d0 up
            ip addr add 10.200.0.1/24 dev d0
            ip route add unreachable 10.201.0.0/24
            echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range";
        let r = in_netns(script, || {
            let ping = |a: &str, t: f64| check(&hc(HealthCheckKind::Ping, t), "svc", format!("{a}:0").parse().unwrap());
            let dgram = ping::socket(false).map(|s| s.1);
            let lo = ping("127.0.0.1", 2.0);
            let lo6 = has_ipv6().then(|| ping("[::1]", 2.0));
            let t0 = Instant::now();
            let silent = ping("10.200.0.2", 0.4);
            let silent_took = t0.elapsed();
            let t0 = Instant::now();
            let unreachable = ping("10.201.0.1", 2.0);
            let unreachable_took = t0.elapsed();
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", "1 0").expect("close ping_group_range");
            let raw = ping::socket(false).map(|s| s.1);
            let lo_raw = ping("127.0.0.1", 2.0);
            (dgram, lo, lo6, silent, silent_took, unreachable, unreachable_took, raw, lo_raw)
        });
        let Some((dgram, lo, lo6, silent, silent_took, unreachable, unreachable_took, raw, lo_raw)) = r else { return };
        assert_eq!(dgram, Ok(false), "a ping socket");
        assert_eq!(lo, Ok(()));
        assert!(lo6.as_ref().is_none_or(|r| r.is_ok()), "{lo6:?}");
        assert_eq!(silent, Err("no ICMP echo reply".into()));
        assert!(silent_took >= Duration::from_millis(400), "{silent_took:?}");
        let e = unreachable.unwrap_err();
        assert!(e.contains("10.201.0.1") && e.contains("No route to host"), "{e}");
        assert!(unreachable_took < Duration::from_secs(1), "{unreachable_took:?}");
        assert_eq!(raw, Ok(true), "a raw socket");
        assert_eq!(lo_raw, Ok(()));
    }

    /// What a received datagram says about the echo: its reply (identifier, sequence number
    /// and token all ours; the identifier not compared on a ping socket, whose kernel sets
    /// it), another echo's reply (passed over), an error quoting our echo (down) or another's
    /// (passed over), over a raw socket (IPv4: after the IP header) and a ping socket.
    #[test]
    fn ping_answers() {
        let (id, seq, token) = ([1, 2], [3, 4], [7u8; 16]);
        let reply = |v6: bool, id: [u8; 2], seq: [u8; 2], token: &[u8]| {
            let mut m = ping::request(v6, id, seq, token);
            m[0] = if v6 { 129 } else { 0 };
            m
        };
        let ip4 = |m: &[u8]| [&[0x45u8; 1][..], &[0; 19], m].concat();
        let a = |d: &[u8], v6: bool, raw: bool| ping::answer(d, v6, raw, id, seq, &token);
        assert_eq!(a(&ip4(&reply(false, id, seq, &token)), false, true), Some(Ok(())));
        assert_eq!(a(&reply(false, [9, 9], seq, &token), false, false), Some(Ok(())), "ping socket: any id");
        assert_eq!(a(&ip4(&reply(false, [9, 9], seq, &token)), false, true), None, "raw: another's id");
        assert_eq!(a(&ip4(&reply(false, id, [3, 5], &token)), false, true), None, "another sequence number");
        assert_eq!(a(&ip4(&reply(false, id, seq, &[7; 15])), false, true), None, "another token");
        assert_eq!(a(&reply(true, id, seq, &token), true, true), Some(Ok(())));
        assert_eq!(a(&ping::request(false, id, seq, &token), false, false), None, "our own request");
        // Host unreachable quoting the echo's IP header and its first 8 bytes (RFC 792).
        let req = ping::request(false, id, seq, &token);
        let err4 = |code: u8, quoted: &[u8]| [&[3, code, 0, 0, 0, 0, 0, 0][..], &ip4(quoted)].concat();
        let e = a(&ip4(&err4(1, &req[..8])), false, true);
        assert_eq!(e, Some(Err("ICMP host unreachable (type 3, code 1)".into())));
        assert_eq!(a(&ip4(&err4(1, &ping::request(false, id, [0, 0], &token)[..8])), false, true), None);
        let req6 = ping::request(true, id, seq, &token);
        let err6 = [&[1u8, 4, 0, 0, 0, 0, 0, 0][..], &[0x60; 40], &req6].concat();
        assert_eq!(a(&err6, true, false), Some(Err("ICMP destination unreachable (type 1, code 4)".into())));
        for d in [&[][..], &[0], &[0x4f], &[3, 1, 0, 0, 0, 0, 0, 0, 0x4f]] {
            assert_eq!(a(d, false, true), None, "{d:?}");
            assert_eq!(a(d, true, false), None, "{d:?}");
        }
    }

    /// The `dns` check against a real dnsmasq on loopback: a name it holds (NOERROR), a name
    /// it cannot answer without upstream servers (REFUSED), keepalived's default query (the
    /// root's SOA: REFUSED too), over IPv4.
    #[test]
    fn dns_check_against_dnsmasq() {
        let Some((mut child, addr)) = dnsmasq() else { return };
        let mut h = hc(HealthCheckKind::Dns, 1.0);
        h.query_name = Some("www.example.test".into());
        h.query_type = Some("A".into());
        // Until dnsmasq listens (a refusal until then).
        let t0 = Instant::now();
        let mut up = check(&h, "svc", addr);
        while up.is_err() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            up = check(&h, "svc", addr);
        }
        h.query_name = Some("other.test".into());
        let other = check(&h, "svc", addr);
        let root = check(&hc(HealthCheckKind::Dns, 1.0), "svc", addr);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(up, Ok(()));
        assert_eq!(other, Err("DNS answer rcode 5 (REFUSED)".into()));
        assert_eq!(root, Err("DNS answer rcode 5 (REFUSED)".into()));
    }

    /// An `exec` check of `body` (a `/bin/sh` script written to a new directory of its own,
    /// which anybody may write to: a script run as another user writes its findings there).
    fn exec_script(name: &str, body: &str, timeout: f64) -> (HealthCheck, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferrovs-health-exec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let script = dir.join("check.sh");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut h = hc(HealthCheckKind::Exec, timeout);
        h.command = vec![script.display().to_string(), dir.display().to_string()];
        (h, dir)
    }

    /// [`check`] of an exec check, again while the script is "text file busy" (another test's
    /// thread forking while this one had the script open for writing).
    fn exec_run(h: &HealthCheck, service: &str, addr: SocketAddr) -> Result<(), String> {
        for _ in 0..20 {
            match check(h, service, addr) {
                Err(e) if e.contains("Text file busy") => std::thread::sleep(Duration::from_millis(50)),
                r => return r,
            }
        }
        check(h, service, addr)
    }

    fn any_addr() -> SocketAddr {
        "10.0.2.2:8080".parse().unwrap()
    }

    /// Exit status 0 passes; any other, or a signal, fails naming it; a script writing 1 MB to
    /// stdout and stderr (nobody reads them) passes; a program that is not there fails.
    #[test]
    fn exec_check_result_is_the_exit_status() {
        let cases = [
            ("ok", "exit 0", None),
            ("three", "exit 3", Some("exited with status 3")),
            ("killed", "kill -9 $$", Some("killed by signal 9 (SIGKILL)")),
            ("chatty", "head -c 1048576 /dev/zero\nhead -c 1048576 /dev/zero >&2\nexit 0", None),
        ];
        for (name, body, want) in cases {
            let (h, dir) = exec_script(name, body, 5.0);
            let t0 = Instant::now();
            let r = exec_run(&h, "svc", any_addr());
            let _ = std::fs::remove_dir_all(&dir);
            match want {
                None => assert_eq!(r, Ok(()), "{name}"),
                Some(w) => {
                    let e = r.expect_err(name);
                    assert!(e.contains(w) && e.contains("check.sh"), "{name}: {e}");
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(4), "{name}: took {:?}", t0.elapsed());
        }
        let mut h = hc(HealthCheckKind::Exec, 1.0);
        h.command = vec!["/nonexistent/ferrovs-check".into()];
        let e = check(&h, "svc", any_addr()).unwrap_err();
        assert!(e.contains("/nonexistent/ferrovs-check") && e.contains("No such file"), "{e}");
    }

    /// The script sees the service, the server's address and the checked port, and the
    /// daemon's own environment; it gets its arguments as given.
    #[test]
    fn exec_check_environment_and_arguments() {
        let (mut h, dir) =
            exec_script("env", "echo \"$FERROVS_SERVICE|$FERROVS_SERVER|$FERROVS_PORT|$PATH|$#|$2\" > \"$1/env\"", 5.0);
        h.command.push("two words".into());
        for (addr, want) in [("10.0.2.2:8080", "10.0.2.2|8080"), ("[fd00::2]:21", "fd00::2|21")] {
            let r = exec_run(&h, "tcp-10.0.0.1-80", addr.parse().unwrap());
            assert_eq!(r, Ok(()));
            let got = std::fs::read_to_string(dir.join("env")).unwrap();
            let path = std::env::var("PATH").unwrap_or_default();
            assert_eq!(got.trim_end(), format!("tcp-10.0.0.1-80|{want}|{path}|2|two words"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `source` (keepalived's `bindto`): tcp, send_expect, udp and dns checks leave from it
    /// (the server sees it as the peer), ping too; a source not of this host fails the
    /// check naming it; a refused connection from a source is refused as without one.
    #[test]
    fn checks_leave_from_their_source() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peers = std::thread::spawn(move || {
            let mut p = Vec::new();
            for c in l.incoming().take(2) {
                let mut c = c.unwrap();
                p.push(c.peer_addr().unwrap().ip());
                let _ = c.write_all(b"OK\r\n");
            }
            p
        });
        let mut h = hc(HealthCheckKind::Tcp, 2.0);
        h.source = Some("127.0.0.2".parse().unwrap());
        assert_eq!(check(&h, "svc", addr), Ok(()));
        h.kind = HealthCheckKind::SendExpect;
        h.expect = Some("OK".into());
        assert_eq!(check(&h, "svc", addr), Ok(()));
        let want: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(); 2];
        assert_eq!(peers.join().unwrap(), want);

        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uaddr = echo.local_addr().unwrap();
        let from = std::thread::spawn(move || {
            let mut b = [0u8; 64];
            let (n, f) = echo.recv_from(&mut b).unwrap();
            echo.send_to(&b[..n], f).unwrap();
            f.ip()
        });
        let mut u = udp_hc(Some("01"), Some("01"), 2.0);
        u.source = Some("127.0.0.3".parse().unwrap());
        assert_eq!(check(&u, "svc", uaddr), Ok(()));
        assert_eq!(from.join().unwrap(), "127.0.0.3".parse::<IpAddr>().unwrap());

        let mut p = hc(HealthCheckKind::Ping, 2.0);
        p.source = Some("127.0.0.4".parse().unwrap());
        if ping::socket(false).is_ok() {
            assert_eq!(check(&p, "svc", "127.0.0.1:0".parse().unwrap()), Ok(()));
        }

        // Not an address of this host (TEST-NET-1): bind fails, nothing is sent.
        h.kind = HealthCheckKind::Tcp;
        h.source = Some("192.0.2.1".parse().unwrap());
        let e = check(&h, "svc", addr).unwrap_err();
        assert!(e.starts_with("bind 192.0.2.1: "), "{e}");
        u.source = h.source;
        assert!(check(&u, "svc", uaddr).unwrap_err().starts_with("bind 192.0.2.1: "));
        // A closed port from a source: refused, named.
        h.source = Some("127.0.0.2".parse().unwrap());
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = check(&h, "svc", closed).unwrap_err();
        assert!(e.starts_with(&format!("connect {closed}: ")) && e.contains("refused"), "{e}");
    }

    /// A real server's check with an `address` (keepalived's `connect_ip`) goes there, to
    /// the check's port; the service's checks go to the server's own address.
    #[test]
    fn a_check_address_replaces_the_server_s() {
        let text = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.1\"\nports = [80]\n\
                    health_check = { type = \"tcp\" }\n\
                    [[service.real_server]]\naddress = \"10.0.2.2\"\n\
                    [[service.real_server]]\naddress = \"10.0.2.3\"\n\
                    health_check = [{ type = \"tcp\", address = \"fd00::3\", port = 9100 }, { type = \"ping\", address = \"192.168.0.3\" }]\n";
        let cfg = Config::from_str(text, "t.toml").expect("config");
        let mut got: Vec<(IpAddr, Vec<SocketAddr>)> =
            checked_servers(&cfg).into_iter().map(|(k, v)| (k.1, v.into_iter().map(|(_, a)| a).collect())).collect();
        got.sort();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            got,
            [
                ("10.0.2.2".parse().unwrap(), vec![sa("10.0.2.2:80")]),
                ("10.0.2.3".parse().unwrap(), vec![sa("[fd00::3]:9100"), sa("192.168.0.3:80")]),
            ]
        );
    }

    /// A server of an all-ports (firewall mark) service without a port: an exec or ping check
    /// runs for it (port 0), a connecting check (or a udp one) has nowhere to go.
    #[test]
    fn exec_checks_need_no_port() {
        let text = |check: &str| {
            format!(
                "[engine]\nworkers = 1\nbackend = \"memory\"\n\n[[interface]]\nname = \"ext\"\ndevice = \"m\"\n\
                 addresses = [\"10.0.1.1/24\"]\n\n[[service]]\nname = \"all\"\nvip = \"10.0.1.100\"\nfwmark = 5\n\
                 forward = \"dr\"\n\n[service.health_check]\n{check}\n\n[[service.real_server]]\naddress = \"10.0.1.7\"\n"
            )
        };
        let cfg = |check: &str| Config::from_str(&text(check), "t.toml").expect("config");
        let exec = checked_servers(&cfg("type = \"exec\"\ncommand = [\"/bin/true\"]"));
        let got: Vec<SocketAddr> = exec.values().map(|v| v[0].1).collect();
        assert_eq!(got, vec!["10.0.1.7:0".parse::<SocketAddr>().unwrap()]);
        let ping = checked_servers(&cfg("type = \"ping\""));
        assert_eq!(ping.values().map(|v| v[0].1).collect::<Vec<_>>(), got, "ping: no port either");
        assert!(checked_servers(&cfg("type = \"tcp\"")).is_empty());
        assert!(checked_servers(&cfg("type = \"udp\"")).is_empty());
        assert_eq!(checked_servers(&cfg("type = \"tcp\"\nport = 22")).len(), 1);
        // Of several checks, those with somewhere to go run.
        let two = Config::from_str(
            &text("type = \"tcp\"").replace("[service.health_check]", "[[service.health_check]]").replace(
                "\n\n[[service.real_server]]",
                "\n[[service.health_check]]\ntype = \"ping\"\n\n[[service.real_server]]",
            ),
            "t.toml",
        )
        .expect("config");
        assert_eq!(two.services[0].health_checks.len(), 2);
        let kinds: Vec<_> = checked_servers(&two).values().flatten().map(|(h, a)| (h.kind, *a)).collect();
        assert_eq!(kinds, vec![(HealthCheckKind::Ping, "10.0.1.7:0".parse().unwrap())]);
    }

    /// Whether process `pid` is gone (or a zombie: dead, waiting for whoever inherited it).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(st) => st.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    /// A script that outlives its timeout: the check fails at the timeout, saying so; the
    /// script is reaped and what it started (its process group) is killed too.
    #[test]
    fn exec_check_at_the_timeout_kills_the_process_group() {
        let (h, dir) = exec_script("timeout", "sleep 30 &\necho $$ $! > \"$1/pids\"\nwait", 0.5);
        let t0 = Instant::now();
        let r = exec_run(&h, "svc", any_addr());
        let took = t0.elapsed();
        let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let e = r.unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        let pids: Vec<u32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        assert_eq!(pids.len(), 2, "the script wrote its own and its sleep's PID");
        let t0 = Instant::now();
        while !pids.iter().all(|&p| dead(p)) && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(dead(pids[1]), "the script's sleep {} is still running", pids[1]);
        assert!(!std::path::Path::new(&format!("/proc/{}", pids[0])).exists(), "the script {} not reaped", pids[0]);
    }

    /// `user`: looked up when the check runs (one that does not exist fails it); the script runs
    /// with that user's uid and primary gid (when the tests run as root, as the daemon does).
    #[test]
    fn exec_check_as_a_user() {
        let (mut h, dir) = exec_script("user", "echo \"$(id -u) $(id -g) $(id -G)\" > \"$1/id\"", 5.0);
        h.user = Some("ferrovs-no-such-user".into());
        let e = exec_run(&h, "svc", any_addr()).unwrap_err();
        assert!(e.contains("\"ferrovs-no-such-user\" does not exist"), "{e}");
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } == 0 {
            let (uid, gid) = user_ids("nobody").expect("user nobody");
            h.user = Some("nobody".into());
            assert_eq!(exec_run(&h, "svc", any_addr()), Ok(()));
            let got = std::fs::read_to_string(dir.join("id")).unwrap();
            assert_eq!(got.trim_end(), format!("{uid} {gid} {gid}"), "uid, gid, no other group");
        } else {
            eprintln!("not root: running as another user not tested");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
