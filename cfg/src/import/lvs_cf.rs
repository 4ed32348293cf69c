//! Red Hat Piranha `lvs.cf`.
//!
//! ```text
//! network = nat
//! virtual ftp {
//!     active = 1
//!     address = 10.0.0.100 eth0:1
//!     port = 21
//!     ...
//!     server ftp1 {
//!         address = 10.0.2.2
//!         active = 1
//!         weight = 1
//!     }
//! }
//! ```

use std::net::IpAddr;

use super::tokens::{tokenize, Tok};
use super::*;

const ORIGIN: &str = "lvs.cf";

/// One `key = value...` statement or `kind NAME { ... }` block.
struct Item {
    key: String,
    line: usize,
    values: Vec<Tok>,
    block: Option<(String, Vec<Item>)>,
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k)
    }

    fn items(&mut self, nested: Option<usize>) -> Result<Vec<Item>, ConfigError> {
        let mut out = Vec::new();
        loop {
            let Some(t) = self.peek(0).cloned() else {
                if let Some(l) = nested {
                    return Err(err(ORIGIN, l, "block opened here is not closed with `}`"));
                }
                return Ok(out);
            };
            if t.is("}") {
                if nested.is_none() {
                    return Err(err(ORIGIN, t.line, "unexpected `}`"));
                }
                self.i += 1;
                return Ok(out);
            }
            if t.quoted || t.is("{") || t.is("=") {
                return Err(err(ORIGIN, t.line, format!("expected a key, found {:?}", t.text)));
            }
            // Block: KIND NAME {
            if self.peek(1).is_some_and(|n| !n.is("=") && !n.is("{") && !n.is("}"))
                && self.peek(2).is_some_and(|b| b.is("{"))
            {
                let name = self.peek(1).unwrap().text.clone();
                self.i += 3;
                let inner = self.items(Some(t.line))?;
                out.push(Item { key: t.text.clone(), line: t.line, values: Vec::new(), block: Some((name, inner)) });
                continue;
            }
            if !self.peek(1).is_some_and(|n| n.is("=")) {
                return Err(err(ORIGIN, t.line, format!("expected `=` after {:?}", t.text)));
            }
            self.i += 2;
            let mut values = Vec::new();
            while let Some(v) = self.peek(0) {
                if v.line != t.line || v.is("}") || v.is("{") || self.peek(1).is_some_and(|n| n.is("=")) {
                    break;
                }
                if v.is("=") {
                    return Err(err(ORIGIN, v.line, "unexpected `=`"));
                }
                values.push(v.clone());
                self.i += 1;
            }
            out.push(Item { key: t.text.clone(), line: t.line, values, block: None });
        }
    }
}

fn value(it: &Item) -> Result<&str, ConfigError> {
    it.values.first().map(|t| t.text.as_str()).ok_or_else(|| err(ORIGIN, it.line, format!("{} has no value", it.key)))
}

fn num(it: &Item, max: u64) -> Result<u64, ConfigError> {
    let v = value(it)?;
    match v.parse::<u64>() {
        Ok(x) if x <= max => Ok(x),
        _ => Err(err(ORIGIN, it.line, format!("invalid {} {v:?}: expected a number up to {max}", it.key))),
    }
}

/// A virtual's `timeout` and `reentry` as ferrovs check timing: `(interval, timeout, rise, fall)`.
///
/// They are not a check's timeouts. Piranha documents `timeout` (Service Timeout) as the time
/// before a real server is considered dead and removed, and `reentry` (Re-entry Time) as the
/// time before a failed one is brought back. So a server failing every check since just after
/// its last success is down after `fall` checks `interval` apart, `fall x interval = timeout`
/// (at least 2 checks when the timeout allows 2 of at least 1/1000 of it, one check spans at most
/// 5 s), and back after `rise x interval >= reentry` (`reentry = 0`: the first good check).
/// A check itself may take the interval, at most 3 s (ferrovs' default). Without `timeout`,
/// ferrovs' defaults (5 s apart, 3 s each, down after 3, up after 2).
fn nanny_timing(timeout: Option<f64>, reentry: Option<f64>) -> (f64, f64, u32, u32) {
    let (interval, fall) = match timeout {
        Some(t) => {
            let interval = (t / 2.0).min(5.0).max(t / 1000.0);
            (interval, ((t / interval).round() as u32).clamp(1, 1000))
        }
        None => (5.0, 3),
    };
    let rise = match reentry {
        Some(r) => ((r / interval).ceil() as u32).clamp(1, 1000),
        None => 2,
    };
    (interval, interval.min(3.0), rise, fall)
}

fn secs(it: &Item) -> Result<f64, ConfigError> {
    let v = value(it)?;
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 86400.0 => Ok(x),
        _ => Err(err(ORIGIN, it.line, format!("invalid {} {v:?}", it.key))),
    }
}

fn forward(it: &Item) -> Result<Forward, ConfigError> {
    match value(it)? {
        "nat" => Ok(Forward::Nat),
        "direct" => Ok(Forward::Dr),
        "tunnel" => Ok(Forward::Tunnel),
        v => Err(err(ORIGIN, it.line, format!("invalid network {v:?}: expected nat, direct or tunnel"))),
    }
}

pub(super) fn import(text: &str, marks: &MarkMap) -> Result<Import, ConfigError> {
    let toks = tokenize(text, &['#'], &['{', '}', '=']).map_err(|(l, m)| err(ORIGIN, l, m))?;
    let items = Parser { toks, i: 0 }.items(None)?;
    let mut warnings = Vec::new();
    let mut default_forward = Forward::Nat;
    for it in items.iter().filter(|it| it.block.is_none()) {
        match it.key.as_str() {
            "network" => default_forward = forward(it)?,
            "tcp_timeout" | "tcpfin_timeout" | "udp_timeout" => warnings.push(format!(
                "line {}: {} = {} not imported: set [engine.timeouts] by hand",
                it.line,
                it.key,
                value(it).unwrap_or("")
            )),
            k => warnings.push(format!("line {}: global setting {k} is not used by ferrovs, ignored", it.line)),
        }
    }

    let mut services: Vec<Service> = Vec::new();
    for it in &items {
        let Some((name, body)) = &it.block else {
            continue;
        };
        if it.key != "virtual" {
            warnings.push(format!("line {}: block {} {name} is not supported, ignored", it.line, it.key));
            continue;
        }
        if name.trim().is_empty() {
            // It becomes the service name, which must not be empty.
            return Err(err(ORIGIN, it.line, "virtual needs a name"));
        }
        if let Some(s) = virtual_block(it.line, name, body, default_forward, marks, &mut warnings)? {
            if services.iter().any(|o| o.name == s.name) {
                return Err(err(ORIGIN, it.line, format!("virtual {name} defined twice")));
            }
            overlap(&services, &s, ORIGIN, it.line)?;
            services.push(s);
        }
    }
    Ok(Import { services, warnings })
}

fn virtual_block(
    line: usize,
    name: &str,
    body: &[Item],
    default_forward: Forward,
    marks: &MarkMap,
    warnings: &mut Vec<String>,
) -> Result<Option<Service>, ConfigError> {
    let mut vip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut protocol = Protocol::Tcp;
    let mut scheduler: Option<String> = None;
    let mut persistent: Option<u32> = None;
    let mut pmask: Option<&Item> = None;
    let mut fwmark: Option<u32> = None;
    let mut send: Option<String> = None;
    let mut expect: Option<String> = None;
    let mut timeout: Option<f64> = None;
    let mut reentry: Option<f64> = None;
    let mut quiesce = false;
    let mut forward = default_forward;
    let mut servers: Vec<&Item> = Vec::new();

    for it in body {
        if let Some((sname, _)) = &it.block {
            if it.key == "server" {
                servers.push(it);
            } else {
                warnings.push(format!(
                    "line {}: block {} {sname} in virtual {name} is not supported, ignored",
                    it.line, it.key
                ));
            }
            continue;
        }
        let l = it.line;
        match it.key.as_str() {
            "active" => {
                if num(it, 1)? == 0 {
                    warnings.push(format!("line {l}: virtual {name} is inactive (active = 0), skipped"));
                    return Ok(None);
                }
            }
            "address" => {
                let v = value(it)?;
                vip = Some(v.parse().map_err(|_| err(ORIGIN, l, format!("invalid address {v:?}")))?);
                if let Some(dev) = it.values.get(1) {
                    warnings.push(format!(
                        "line {l}: virtual {name}: VIP device {} not imported: put the VIP's subnet on an [[interface]]",
                        dev.text
                    ));
                }
            }
            "port" => {
                let p = num(it, 65535)? as u16;
                if p == 0 {
                    return Err(err(ORIGIN, l, "port must be 1..=65535"));
                }
                port = Some(p);
            }
            "protocol" => {
                protocol = match value(it)? {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    v => return Err(err(ORIGIN, l, format!("invalid protocol {v:?}: expected tcp or udp"))),
                }
            }
            "scheduler" => {
                let s = ferrovs_sched::check_name(value(it)?).map_err(|e| err(ORIGIN, l, e.to_string()))?;
                scheduler = Some(s.to_string());
            }
            "persistent" => {
                // ferrovs, as ipvsadm, holds persistence to 31 days.
                let t = num(it, MAX_PERSISTENCE_S as u64)? as u32;
                persistent = (t > 0).then_some(t);
            }
            "pmask" => pmask = Some(it),
            // Piranha's lvs adds a firewall-mark service only for a non-zero mark (0: none).
            "fwmark" => fwmark = Some(num(it, u32::MAX as u64)? as u32).filter(|&m| m != 0),
            "send" => send = Some(value(it)?.to_string()),
            "expect" => expect = Some(value(it)?.to_string()),
            "timeout" => timeout = Some(secs(it)?),
            "reentry" => reentry = Some(num(it, 86400)? as f64),
            "quiesce_server" => quiesce = num(it, 1)? == 1,
            "network" => forward = super::lvs_cf::forward(it)?,
            "use_regex" => {
                if num(it, 1)? == 1 {
                    warnings.push(format!("line {l}: use_regex = 1 not supported: expect is matched as a prefix"));
                }
            }
            "load_monitor" => {
                if value(it)? != "none" {
                    warnings.push(format!("line {l}: load_monitor {} not supported, ignored", value(it)?));
                }
            }
            "vip_nmask" => {} // netmask of the VIP alias: covered by the interface warning on `address`
            k => warnings.push(format!("line {l}: virtual {name}: {k} is not supported, ignored")),
        }
    }

    let vip = vip.ok_or_else(|| err(ORIGIN, line, format!("virtual {name} has no address")))?;
    let mut ports = Vec::new();
    match port {
        Some(p) => ports.push(PortRange { lo: p, hi: p }),
        None if fwmark.is_none() => return Err(err(ORIGIN, line, format!("virtual {name} has no port"))),
        None => {}
    }
    let mut svc = blank_service(name.to_string(), vip, protocol, ports);
    svc.forward = forward;
    svc.fwmark = fwmark;
    if let Some(s) = scheduler {
        svc.scheduler = s;
    }
    if let Some(t) = persistent {
        let nm = match pmask {
            Some(it) => netmask(value(it)?, vip).map_err(|e| err(ORIGIN, it.line, e))?,
            None => max_prefix(vip),
        };
        svc.persistence = Some(Persistence { timeout: t, netmask: nm });
    }
    let mapped = fwmark.and_then(|m| marks.get(&(m, vip.is_ipv6())));
    if let (Some(m), Some((mvip, mports))) = (fwmark, mapped) {
        // The rules that set the mark give the ports the service takes (none: every port).
        if *mvip != vip {
            warnings.push(format!(
                "line {line}: virtual {name}: the rules setting fwmark {m} select {mvip}, not its address {vip}: \
                 {vip} kept"
            ));
        }
        svc.ports = mports.clone();
        // (A mark on every port of the address is not taken for an FTP one.)
        if protocol == Protocol::Tcp && !svc.ports.is_empty() && svc.has_port(21) {
            svc.ftp = Some(FtpOptions::default());
            warnings.push(format!(
                "line {line}: virtual {name}: fwmark {m} selecting port 21 imported as an FTP service with the \
                 mark's ports (ftp = true)"
            ));
        }
    } else if let Some(m) = fwmark {
        if port == Some(21) && protocol == Protocol::Tcp {
            svc.ftp = Some(FtpOptions::default());
            let note = if forward == Forward::Nat {
                "in NAT the FTP helper follows the data connections, so the passive port range the mark also \
                 selected is normally not needed"
            } else {
                "in direct/tunnel mode the balancer does not see the servers' PASV replies: add the passive data \
                 port range the mark selected to `ports` (persistence keeps a client on one server)"
            };
            warnings.push(format!(
                "line {line}: virtual {name}: fwmark {m} with port 21 imported as an FTP service \
                 (ports = [21], ftp = true); {note}"
            ));
        } else {
            warnings.push(format!(
                "line {line}: virtual {name}: fwmark {m}: the other ports the mark selects are set by iptables rules \
                 not in lvs.cf: add them to `ports` by hand"
            ));
        }
    } else {
        maybe_ftp(&mut svc, line, warnings, "TCP port 21 (ip_vs_ftp)");
    }

    // Piranha's nanny always connects to the port; send/expect add a
    // payload check. An empty expect matches any reply: a connect check.
    if expect.as_deref() == Some("") {
        warnings.push(format!("line {line}: virtual {name}: expect is empty: checked by TCP connect only"));
        expect = None;
        send = None;
    }
    let kind = if expect.is_some() { HealthCheckKind::SendExpect } else { HealthCheckKind::Tcp };
    if send.is_some() && expect.is_none() {
        warnings.push(format!("line {line}: virtual {name}: send without expect: checked by TCP connect only"));
    }
    let (interval, check_timeout, rise, fall) = nanny_timing(timeout, reentry);
    if let Some(r) = reentry.filter(|&r| r > f64::from(rise) * interval) {
        warnings.push(format!(
            "line {line}: virtual {name}: reentry = {r} is more than 1000 checks {interval} s apart: \
             a server comes back after 1000 good checks ({} s)",
            f64::from(rise) * interval
        ));
    }
    svc.health_checks = vec![HealthCheck {
        send: if kind == HealthCheckKind::SendExpect { send } else { None },
        expect,
        interval,
        timeout: check_timeout,
        rise,
        fall,
        quiesce,
        ..HealthCheck::new(kind)
    }];

    for it in servers {
        let (sname, body) = it.block.as_ref().unwrap();
        let mut address: Option<IpAddr> = None;
        let mut weight = 1;
        let mut sport: Option<u16> = None;
        let mut active = true;
        for kv in body {
            if kv.block.is_some() {
                warnings.push(format!("line {}: nested block in server {sname} ignored", kv.line));
                continue;
            }
            match kv.key.as_str() {
                "address" => {
                    let v = value(kv)?;
                    address = Some(v.parse().map_err(|_| err(ORIGIN, kv.line, format!("invalid address {v:?}")))?);
                }
                "active" => active = num(kv, 1)? == 1,
                "weight" => weight = num(kv, 65535)? as u32,
                "port" => {
                    let p = num(kv, 65535)? as u16;
                    sport = (p != 0).then_some(p);
                }
                k => warnings.push(format!("line {}: server {sname}: {k} is not supported, ignored", kv.line)),
            }
        }
        let address = address.ok_or_else(|| err(ORIGIN, it.line, format!("server {sname} has no address")))?;
        if !active {
            warnings.push(format!("line {}: server {sname} is inactive (active = 0), skipped", it.line));
            continue;
        }
        if address.is_ipv4() != vip.is_ipv4() {
            // ipvsadm -a refuses it outside tunnelling; ferrovs mixes families only in full NAT.
            return Err(err(
                ORIGIN,
                it.line,
                format!("server {sname}: real server {address} is not in the address family of virtual {name} ({vip})"),
            ));
        }
        if svc.real_servers.iter().any(|r| r.address == address && svc.server_port(r.port) == svc.server_port(sport)) {
            return Err(err(
                ORIGIN,
                it.line,
                format!("server {sname}: real server {address} listed twice in virtual {name}"),
            ));
        }
        svc.real_servers.push(RealServer {
            address,
            port: sport,
            weight,
            upper: 0,
            lower: 0,
            forward: None,
            proxy_protocol: None,
            health_checks: None,
        });
    }
    Ok(Some(svc))
}

#[cfg(test)]
mod tests {
    use super::nanny_timing;

    #[test]
    fn timeout_is_the_time_to_dead_and_reentry_the_time_to_back() {
        // (interval, check timeout, rise, fall): fall x interval = timeout, rise x interval >= reentry.
        assert_eq!(nanny_timing(None, None), (5.0, 3.0, 2, 3), "ferrovs' defaults");
        assert_eq!(nanny_timing(Some(6.0), Some(15.0)), (3.0, 3.0, 5, 2), "Piranha's defaults");
        assert_eq!(nanny_timing(Some(60.0), Some(0.0)), (5.0, 3.0, 1, 12), "reentry 0: the first good check");
        assert_eq!(nanny_timing(Some(1.0), None), (0.5, 0.5, 2, 2), "a check lasts at most the interval");
        assert_eq!(nanny_timing(Some(7.0), Some(10.0)), (3.5, 3.0, 3, 2));
        let (i, t, r, f) = nanny_timing(Some(86400.0), Some(86400.0));
        assert_eq!((i, t, r, f), (86.4, 3.0, 1000, 1000), "within the validator's 1000 checks");
        let (i, _, r, f) = nanny_timing(Some(6.0), Some(86400.0));
        assert_eq!((i, f, r), (3.0, 2, 1000), "reentry beyond 1000 checks is cut (and warned)");
    }
}
