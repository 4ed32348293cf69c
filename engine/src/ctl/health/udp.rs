//! The `udp` check (keepalived's `UDP_CHECK`): one datagram to the real server's port, then
//! - without `require_reply`: up unless an ICMP error (port unreachable: nothing listens)
//!   comes back before the timeout; an answer ends the wait early;
//! - with it: up on an answer within the timeout that starts with `reply` (its `x` digits
//!   matching any nibble), if given. The socket is connected, so only the server's own
//!   datagrams count; the first one decides, as with keepalived. keepalived compares only as
//!   many octets as the answer has; a shorter answer than `reply` fails here. With
//!   `min_reply_length` / `max_reply_length` the answer's size must be within them
//!   (keepalived applies them only with `reply` data, ferrovs to any required answer).

use super::*;

pub(crate) fn check(hc: &HealthCheck, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    // Validated with the config; a control-socket edit goes through the same validation.
    let payload = match &hc.payload {
        Some(p) => HealthCheck::hex_octets(p, false).ok_or_else(|| format!("payload {p:?} is not hex octets"))?.0,
        None => Vec::new(),
    };
    let reply = match &hc.reply {
        Some(r) => Some(HealthCheck::hex_octets(r, true).ok_or_else(|| format!("reply {r:?} is not hex octets"))?),
        None => None,
    };
    let require = hc.require_reply || reply.is_some();
    let s = super::sock::udp(addr, hc.source)?;
    s.send(&payload).map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).ok();
    match s.recv(&mut buf) {
        Ok(n)
            if hc.min_reply_length.is_some_and(|m| n < m as usize)
                || hc.max_reply_length.is_some_and(|m| n > m as usize) =>
        {
            Err(format!(
                "answer of {n} octets, not {}..{} (min_reply_length..max_reply_length)",
                hc.min_reply_length.unwrap_or(0),
                hc.max_reply_length.unwrap_or(u16::MAX)
            ))
        }
        Ok(n) => match &reply {
            Some((want, mask)) if !answer_matches(&buf[..n], want, mask) => Err(format!(
                "answer {} does not start with {}",
                hex(&buf[..n.min(want.len().max(16))]),
                hc.reply.as_deref().unwrap_or_default()
            )),
            _ => Ok(()),
        },
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            if require {
                Err("no UDP answer".into())
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err("port unreachable".into()),
        Err(e) => Err(format!("receive: {e}")),
    }
}

/// Does `got` start with `want`, the nibbles of `mask` that are zero matching any?
pub(crate) fn answer_matches(got: &[u8], want: &[u8], mask: &[u8]) -> bool {
    got.len() >= want.len() && got.iter().zip(want).zip(mask).all(|((g, w), m)| (g ^ w) & m == 0)
}

/// `b` in hex, octets space-separated (as `payload` and `reply` are written).
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}
