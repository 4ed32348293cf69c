//! A private network namespace holding one veth pair (`fvsa` <-> `fvsb`),
//! deleted when the guard drops, even after a panic. Tests that need it
//! skip (with a message) when not root or without ip(8), except when the
//! environment variable `CI` is set: CI runs as root with everything
//! installed, so there a skip means a broken setup and the test fails.

use std::process::Command;

/// Skip a test that cannot run here (print why), or fail it under CI.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false")) {
        panic!("CI is set but this test would be skipped: {why} (CI must run as root with ip(8) installed)");
    }
    eprintln!("SKIP: {why}");
}

pub struct VethNs {
    pub name: String,
}

impl VethNs {
    /// Create `PREFIX-<pid>-TAG` with the veth pair up (IPv6 off, so the
    /// kernel stays quiet), optionally with fixed MACs on `fvsa`/`fvsb`.
    pub fn new(prefix: &str, tag: &str, macs: Option<([u8; 6], [u8; 6])>) -> Option<VethNs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            skip_or_fail("this test needs root (network namespaces, raw sockets)");
            return None;
        }
        let name = format!("{prefix}-{}-{tag}", std::process::id());
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                skip_or_fail(&format!("ip netns add failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
                return None;
            }
            Err(e) => {
                skip_or_fail(&format!("cannot run ip(8): {e}"));
                return None;
            }
        }
        let ns = VethNs { name };
        ns.ip(&["link", "add", "fvsa", "type", "veth", "peer", "name", "fvsb"]);
        if let Some((a, b)) = macs {
            ns.ip(&["link", "set", "fvsa", "address", &mac_str(a)]);
            ns.ip(&["link", "set", "fvsb", "address", &mac_str(b)]);
        }
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
            .output();
        ns.ip(&["link", "set", "fvsa", "up"]);
        ns.ip(&["link", "set", "fvsb", "up"]);
        Some(ns)
    }

    /// `ip -n NAME ARGS...`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let o = Command::new("ip").arg("-n").arg(&self.name).args(args).output().expect("run ip");
        assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// Run `f` on a thread inside the namespace; a panic propagates here
    /// (after which the guard still deletes the namespace).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns");
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a valid namespace fd only changes this
                // thread's network namespace.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
