//! systemd's readiness protocol (`sd_notify(3)`), without libsystemd.
//!
//! With `Type=notify` systemd passes `$NOTIFY_SOCKET`, the path of a unix
//! datagram socket (or `@name` for the abstract namespace). The daemon sends
//! one datagram per state change: `READY=1` once its ports are open and the
//! control socket listens, `RELOADING=1` (with `MONOTONIC_USEC`) while a
//! SIGHUP reload runs and `READY=1` again after it, `STOPPING=1` when it
//! begins to shut down, and `STATUS=...` lines shown by `systemctl status`.
//! Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Send `state` (newline-separated `KEY=VALUE` assignments) to
/// `$NOTIFY_SOCKET`. Returns `Ok(false)` when the variable is not set.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) if !path.is_empty() => notify_to(&path, state).map(|_| true),
        _ => Ok(false),
    }
}

/// Send `state` to the notification socket at `path` (`@name`: abstract).
pub fn notify_to(path: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?
    } else {
        sock.send_to(state.as_bytes(), path)?
    };
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram to NOTIFY_SOCKET"));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds (what `MONOTONIC_USEC` carries).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// `notify`, logging (not failing) when the socket is unreachable: a
/// supervisor that went away must not stop the data plane.
pub fn notify_or_warn(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("sd_notify {:?}: {e}", state.lines().next().unwrap_or(""));
    }
}

/// The ready message with a status line.
pub fn ready(status: &str) {
    notify_or_warn(&format!("READY=1\nSTATUS={status}"));
}

/// The reloading message (systemd >= 253 wants `MONOTONIC_USEC` with it).
pub fn reloading() {
    notify_or_warn(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

pub fn stopping() {
    notify_or_warn("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive_the_datagram() {
        let dir = std::env::temp_dir().join(format!("fvs-sdn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        notify_to(p.as_os_str(), "READY=1\nSTATUS=x").unwrap();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("fvs-sdn-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx2 = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_socket_is_an_error() {
        assert!(notify_to(OsStr::new("/nonexistent/fvs-notify"), "READY=1").is_err());
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 1000);
    }
}
