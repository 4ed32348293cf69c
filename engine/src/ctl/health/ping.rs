//! The `ping` check (keepalived's `PING_CHECK`): one ICMP echo request (ICMPv6 for an IPv6
//! server), up on its echo reply within the timeout; an ICMP error about it (destination
//! unreachable, time exceeded) fails the check at once.
//!
//! The socket is a ping socket (`SOCK_DGRAM`, the kernel's unprivileged ICMP echo) where
//! `net.ipv4.ping_group_range` allows the daemon's group, else a raw socket (the daemon runs
//! as root). keepalived widens `ping_group_range` for itself; ferrovs changes no sysctl. The
//! echo carries a random identifier, sequence number and 16-byte token, and only the reply
//! echoing all three (the kernel sets a ping socket's identifier itself) counts: another
//! check's replies, which a raw socket sees too, are passed over.

use super::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ICMP types of the echo request and reply (IPv4, IPv6).
const ECHO: [u8; 2] = [8, 128];
const ECHO_REPLY: [u8; 2] = [0, 129];

pub(crate) fn check(addr: IpAddr, source: Option<IpAddr>, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let v6 = addr.is_ipv6();
    let (sock, raw) = socket(v6)?;
    let fd = sock.as_raw_fd();
    if let Some(src) = source {
        super::sock::bind(fd, src)?;
    }
    // Where `send` goes, and (a raw socket) only its datagrams received.
    super::sock::connect(fd, SocketAddr::new(addr, 0)).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut r = [0u8; 20];
    random_bytes(&mut r);
    let (id, seq, token) = ([r[0], r[1]], [r[2], r[3]], &r[4..20]);
    let echo = request(v6, id, seq, token);
    // SAFETY: `echo` is a live buffer of `echo.len()` bytes; `fd` is open (owned by `sock`).
    let n = unsafe { libc::send(fd, echo.as_ptr().cast(), echo.len(), 0) };
    if n < 0 {
        return Err(format!("send ICMP echo to {addr}: {}", std::io::Error::last_os_error()));
    }
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no ICMP echo reply".into());
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // A ping socket reports an ICMP error about its echo so.
            return Err(format!("ICMP echo to {addr}: {e}"));
        }
        match answer(&buf[..n as usize], v6, raw, id, seq, token) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
}

/// The echo request: type, code 0, checksum (ICMPv4; the kernel fills ICMPv6's), the
/// identifier, the sequence number, the token.
pub(crate) fn request(v6: bool, id: [u8; 2], seq: [u8; 2], token: &[u8]) -> Vec<u8> {
    let mut m = vec![ECHO[v6 as usize], 0, 0, 0, id[0], id[1], seq[0], seq[1]];
    m.extend_from_slice(token);
    if !v6 {
        let c = crate::wire::csum::finish(&m, 0);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// What a received datagram says about our echo: `Some(Ok)` its reply, `Some(Err)` an ICMP
/// error about it, `None` anything else. `raw`: a raw socket's datagram (ICMPv4 after its IP
/// header; every echo on the host, so the identifier must be ours too); a ping socket's holds
/// the ICMP message alone, its replies and errors ours (its identifier the kernel's).
pub(crate) fn answer(
    d: &[u8],
    v6: bool,
    raw: bool,
    id: [u8; 2],
    seq: [u8; 2],
    token: &[u8],
) -> Option<Result<(), String>> {
    let m = if raw && !v6 { d.get(usize::from(d.first()? & 0x0f) * 4..)? } else { d };
    let ours = |echo: &[u8], whole: bool| {
        echo.get(6..8) == Some(&seq[..])
            && (!raw || echo.get(4..6) == Some(&id[..]))
            // An error quotes at least the echo's first 8 bytes (RFC 792), the token when it can.
            && (if whole { echo.get(8..) == Some(token) } else { echo.get(8..).is_none_or(|t| token.starts_with(t)) })
    };
    let (ty, code) = (*m.first()?, *m.get(1)?);
    if ty == ECHO_REPLY[v6 as usize] {
        return ours(m, true).then_some(Ok(()));
    }
    // The quoted request: after the error's 8-byte header, its IP header, then the echo.
    let quoted = m.get(8..)?;
    let echo = if v6 { quoted.get(40..)? } else { quoted.get(usize::from(quoted.first()? & 0x0f) * 4..)? };
    if echo.first() != Some(&ECHO[v6 as usize]) || !ours(echo, false) {
        return None;
    }
    let what = match (v6, ty, code) {
        (false, 3, 0) | (true, 1, 0) | (true, 1, 3) => "no route",
        (false, 3, 1) => "host unreachable",
        (false, 3, 13) | (true, 1, 1) => "administratively prohibited",
        (false, 3, _) | (true, 1, _) => "destination unreachable",
        (false, 11, _) | (true, 3, _) => "time exceeded",
        _ => return None,
    };
    Some(Err(format!("ICMP {what} (type {ty}, code {code})")))
}

/// A ping socket for the family, else (not allowed: the daemon's group is outside
/// `ping_group_range`) a raw one (`true`).
pub(super) fn socket(v6: bool) -> Result<(OwnedFd, bool), String> {
    let (dom, proto) = if v6 { (libc::AF_INET6, libc::IPPROTO_ICMPV6) } else { (libc::AF_INET, libc::IPPROTO_ICMP) };
    let mut last = None;
    for (ty, raw) in [(libc::SOCK_DGRAM, false), (libc::SOCK_RAW, true)] {
        // SAFETY: socket(2) with constant arguments; a non-negative result is a new fd we own.
        let fd = unsafe { libc::socket(dom, ty | libc::SOCK_CLOEXEC, proto) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, raw));
        }
        last = Some(std::io::Error::last_os_error());
    }
    Err(format!(
        "ICMP socket: {} (a ping socket needs the group in net.ipv4.ping_group_range, a raw one root)",
        last.expect("tried")
    ))
}
