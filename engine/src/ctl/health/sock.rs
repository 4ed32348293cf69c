//! The sockets of checks that leave from a given `source` address (keepalived's `bindto`):
//! bound to it (any port) before they connect. Without one the kernel picks the address, as
//! for any socket.

use super::*;
use std::net::UdpSocket;
use std::os::fd::{FromRawFd, OwnedFd};

/// `addr` as a socket address for the libc calls, with its length.
pub(super) fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sa = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sa = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// bind(2) the socket `fd` to `source`, any port.
pub(super) fn bind(fd: i32, source: IpAddr) -> Result<(), String> {
    let (ss, len) = sockaddr(SocketAddr::new(source, 0));
    // SAFETY: `ss` holds a valid socket address of `len` bytes; `fd` is an open socket.
    if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(format!("bind {source}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// connect(2) the socket `fd` to `addr`.
pub(super) fn connect(fd: i32, addr: SocketAddr) -> std::io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: `ss` holds a valid socket address of `len` bytes; `fd` is an open socket.
    if unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP connection to `addr` from `source` (else the kernel's choice) within `timeout`.
pub(super) fn tcp(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Result<TcpStream, String> {
    let Some(src) = source else {
        return TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"));
    };
    let dom = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) with constant arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::socket(dom, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(format!("TCP socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    bind(fd, src)?;
    match connect(fd, addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n == 0 {
                return Err(format!("connect {addr}: timed out"));
            }
            if n < 0 {
                return Err(format!("connect {addr}: {}", std::io::Error::last_os_error()));
            }
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `err` and `len` are live and sized for SO_ERROR's int.
            let r = unsafe {
                libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
            };
            if r < 0 {
                return Err(format!("connect {addr}: {}", std::io::Error::last_os_error()));
            }
            if err != 0 {
                return Err(format!("connect {addr}: {}", std::io::Error::from_raw_os_error(err)));
            }
        }
        Err(e) => return Err(format!("connect {addr}: {e}")),
    }
    let s = TcpStream::from(sock);
    s.set_nonblocking(false).map_err(|e| format!("connect {addr}: {e}"))?;
    Ok(s)
}

/// A UDP socket from `source` (else any address of the family), connected to `addr`.
pub(super) fn udp(addr: SocketAddr, source: Option<IpAddr>) -> Result<UdpSocket, String> {
    let local = source.unwrap_or(if addr.is_ipv4() {
        IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
    });
    let s = UdpSocket::bind(SocketAddr::new(local, 0)).map_err(|e| match source {
        Some(src) => format!("bind {src}: {e}"),
        None => format!("UDP socket: {e}"),
    })?;
    s.connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    Ok(s)
}
