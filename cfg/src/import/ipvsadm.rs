//! `ipvsadm-save` / `ipvsadm -S -n` output.

use std::net::IpAddr;

use super::*;

const ORIGIN: &str = "ipvsadm";

enum Key {
    Addr(Protocol, IpAddr, u16),
    Mark(u32, bool),
}

impl Key {
    fn same(&self, o: &Key) -> bool {
        match (self, o) {
            (Key::Addr(a, b, c), Key::Addr(x, y, z)) => a == x && b == y && c == z,
            (Key::Mark(a, _), Key::Mark(x, _)) => a == x,
            _ => false,
        }
    }
}

pub(super) fn import(text: &str, marks: &MarkMap) -> Result<Import, ConfigError> {
    let mut services: Vec<(Key, Service, usize)> = Vec::new();
    let mut warnings = Vec::new();

    for (i, raw_line) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw_line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut toks = line.split_whitespace().peekable();
        if toks.peek() == Some(&"ipvsadm") {
            toks.next();
        }
        let toks: Vec<&str> = toks.collect();
        let mut cmd: Option<char> = None;
        let mut key: Option<Key> = None;
        let mut real: Option<(IpAddr, Option<u16>)> = None;
        let mut sched: Option<String> = None;
        let mut persistent: Option<u32> = None;
        let mut mask: Option<&str> = None;
        let mut method: Option<Forward> = None;
        let mut weight: Option<u32> = None;
        let (mut upper, mut lower) = (0u32, 0u32);
        let mut v6 = false;

        let mut j = 0;
        let arg = |j: &mut usize, opt: &str| -> Result<&str, ConfigError> {
            *j += 1;
            toks.get(*j).copied().ok_or_else(|| err(ORIGIN, n, format!("option {opt} needs an argument")))
        };
        let num = |s: &str, what: &str, max: u64| -> Result<u64, ConfigError> {
            match s.parse::<u64>() {
                Ok(v) if v <= max => Ok(v),
                _ => Err(err(ORIGIN, n, format!("invalid {what} {s:?}"))),
            }
        };
        while j < toks.len() {
            let t = toks[j];
            match t {
                "-A" | "--add-service" => cmd = Some('A'),
                "-a" | "--add-server" => cmd = Some('a'),
                "-E" | "--edit-service" => cmd = Some('A'),
                "-e" | "--edit-server" => cmd = Some('a'),
                "-C" | "--clear" => cmd = Some('C'),
                "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                    let proto = if t == "-t" || t == "--tcp-service" { Protocol::Tcp } else { Protocol::Udp };
                    let a = arg(&mut j, t)?;
                    let (ip, port) = split_host_port(a).ok_or_else(|| {
                        err(ORIGIN, n, format!("invalid service address {a:?} (expected ADDRESS:PORT)"))
                    })?;
                    let port = port
                        .and_then(port_number)
                        .filter(|p| *p != 0)
                        .ok_or_else(|| err(ORIGIN, n, format!("service address {a:?} needs a port 1..=65535")))?;
                    key = Some(Key::Addr(proto, ip, port));
                }
                "-f" | "--fwmark-service" => {
                    let a = arg(&mut j, t)?;
                    key = Some(Key::Mark(num(a, "firewall mark", u32::MAX as u64)? as u32, false));
                }
                "-6" | "--ipv6" => v6 = true,
                "-s" | "--scheduler" => sched = Some(arg(&mut j, t)?.to_string()),
                "-p" | "--persistent" => {
                    // The timeout is optional (default 300).
                    match toks.get(j + 1) {
                        Some(v) if !v.starts_with('-') => {
                            j += 1;
                            persistent = Some(num(v, "persistence timeout", u32::MAX as u64)? as u32);
                        }
                        _ => persistent = Some(300),
                    }
                }
                "-M" | "--netmask" => mask = Some(arg(&mut j, t)?),
                "-r" | "--real-server" => {
                    let a = arg(&mut j, t)?;
                    let (ip, port) = split_host_port(a)
                        .ok_or_else(|| err(ORIGIN, n, format!("invalid real server address {a:?}")))?;
                    let port = match port {
                        None => None,
                        Some(p) => {
                            let p = port_number(p)
                                .ok_or_else(|| err(ORIGIN, n, format!("invalid real server port {p:?}")))?;
                            (p != 0).then_some(p)
                        }
                    };
                    real = Some((ip, port));
                }
                "-g" | "--gatewaying" => method = Some(Forward::Dr),
                "-m" | "--masquerading" => method = Some(Forward::Nat),
                "-i" | "--ipip" => method = Some(Forward::Tunnel),
                "-w" | "--weight" => weight = Some(num(arg(&mut j, t)?, "weight", 65535)? as u32),
                "-x" | "--u-threshold" => upper = num(arg(&mut j, t)?, "upper threshold", u32::MAX as u64)? as u32,
                "-y" | "--l-threshold" => lower = num(arg(&mut j, t)?, "lower threshold", u32::MAX as u64)? as u32,
                "-b" | "--sched-flags" | "--pe" | "--tun-type" | "--tun-port" | "--tun-nocsum" | "--tun-csum"
                | "--tun-remcsum" => {
                    let takes_arg = !matches!(t, "--tun-nocsum" | "--tun-csum" | "--tun-remcsum");
                    let v = if takes_arg { arg(&mut j, t)? } else { "" };
                    warnings.push(format!("line {n}: option {t} {v} is not supported, ignored"));
                }
                "-o" | "--ops" => {
                    warnings.push(format!("line {n}: option {t} (one-packet scheduling) is not supported, ignored"))
                }
                other => warnings.push(format!("line {n}: unknown option {other:?} ignored")),
            }
            j += 1;
        }
        if let Some(Key::Mark(m, _)) = key {
            key = Some(Key::Mark(m, v6));
        }

        match cmd {
            Some('C') => continue,
            None => {
                warnings.push(format!("line {n}: no -A or -a command, line ignored"));
                continue;
            }
            _ => {}
        }
        let key = key.ok_or_else(|| err(ORIGIN, n, "missing service (-t, -u or -f)"))?;

        if cmd == Some('A') {
            if let Some((_, _, l)) = services.iter().find(|(k, _, _)| k.same(&key)) {
                return Err(err(ORIGIN, n, format!("service defined twice (first on line {l})")));
            }
            let mut svc = match &key {
                Key::Addr(proto, ip, port) => blank_service(
                    service_name(*proto, *ip, *port),
                    *ip,
                    *proto,
                    vec![PortRange { lo: *port, hi: *port }],
                ),
                Key::Mark(m, v6) => {
                    let (vip, ports) = match marks.get(m) {
                        Some((ip, ports)) => (*ip, ports.clone()),
                        None => {
                            warnings.push(format!(
                                "line {n}: firewall mark {m}: the addresses and ports it selects are set by \
                                 iptables/nftables rules, not by ipvsadm; imported with vip {} and all ports: \
                                 set vip and ports by hand",
                                unspecified(*v6)
                            ));
                            (unspecified(*v6), Vec::new())
                        }
                    };
                    let mut s = blank_service(format!("fwm{m}"), vip, Protocol::Tcp, ports);
                    s.fwmark = Some(*m);
                    warnings.push(format!(
                        "line {n}: firewall mark {m}: a mark may select TCP and UDP; imported as protocol tcp"
                    ));
                    s
                }
            };
            if let Some(s) = sched {
                ferrovs_sched::check_name(&s).map_err(|e| err(ORIGIN, n, e.to_string()))?;
                svc.scheduler = s;
            }
            if let Some(t) = persistent {
                let nm = match mask {
                    Some(m) => netmask(m, svc.vip).map_err(|e| err(ORIGIN, n, e))?,
                    None => max_prefix(svc.vip),
                };
                svc.persistence = Some(Persistence { timeout: t, netmask: nm });
            } else if mask.is_some() {
                warnings.push(format!("line {n}: -M without -p has no effect, ignored"));
            }
            maybe_ftp(&mut svc, n, &mut warnings, "TCP port 21 (ip_vs_ftp)");
            services.push((key, svc, n));
        } else {
            let Some((_, svc, _)) = services.iter_mut().find(|(k, _, _)| k.same(&key)) else {
                return Err(err(ORIGIN, n, "real server added to a service that was not defined before (-A)"));
            };
            let (address, port) = real.ok_or_else(|| err(ORIGIN, n, "-a needs a real server (-r)"))?;
            // ipvsadm's default forwarding method is gatewaying (DR).
            let fwd = method.unwrap_or(Forward::Dr);
            if svc.real_servers.is_empty() {
                svc.forward = fwd;
            }
            svc.real_servers.push(RealServer {
                address,
                port,
                weight: weight.unwrap_or(1),
                upper,
                lower,
                forward: (fwd != svc.forward).then_some(fwd),
            });
        }
    }
    Ok(Import { services: services.into_iter().map(|(_, s, _)| s).collect(), warnings })
}
