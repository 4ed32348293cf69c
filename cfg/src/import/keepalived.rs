//! `keepalived.conf`: the `virtual_server` blocks (LVS part). VRRP and
//! global settings are reported as not imported.

use std::net::IpAddr;

use super::tokens::{tokenize, Tok};
use super::*;

const ORIGIN: &str = "keepalived.conf";

/// keepalived's IPVS_SVC_PERSISTENT_TIMEOUT: the persistence timeout of a bare
/// `persistence_timeout` or of a `persistence_granularity` without one.
const PERSISTENT_TIMEOUT: u32 = 6 * 60;

/// `key args... [{ children }]`; a statement ends at the end of its line.
struct Node {
    key: String,
    args: Vec<String>,
    /// Which of `args` were double-quoted strings (one word whatever spaces they hold).
    quoted: Vec<bool>,
    line: usize,
    children: Option<Vec<Node>>,
}

fn parse(toks: &[Tok], i: &mut usize, open: Option<usize>) -> Result<Vec<Node>, ConfigError> {
    let mut out = Vec::new();
    loop {
        let Some(t) = toks.get(*i) else {
            return match open {
                Some(l) => Err(err(ORIGIN, l, "block opened here is not closed with `}`")),
                None => Ok(out),
            };
        };
        if t.is("}") {
            *i += 1;
            return match open {
                Some(_) => Ok(out),
                None => Err(err(ORIGIN, t.line, "unexpected `}`")),
            };
        }
        if t.is("{") {
            // An anonymous block: keepalived allows none; skip it with its contents.
            return Err(err(ORIGIN, t.line, "`{` without a keyword"));
        }
        let line = t.line;
        let key = t.text.clone();
        *i += 1;
        let (mut args, mut quoted) = (Vec::new(), Vec::new());
        while let Some(a) = toks.get(*i) {
            if a.line != line || a.is("{") || a.is("}") {
                break;
            }
            args.push(a.text.clone());
            quoted.push(a.quoted);
            *i += 1;
        }
        let children = if toks.get(*i).is_some_and(|b| b.is("{")) {
            *i += 1;
            Some(parse(toks, i, Some(line))?)
        } else {
            None
        };
        out.push(Node { key, args, quoted, line, children });
    }
}

fn arg(n: &Node) -> Result<&str, ConfigError> {
    n.args.first().map(String::as_str).ok_or_else(|| err(ORIGIN, n.line, format!("{} needs a value", n.key)))
}

fn num(n: &Node, max: u64) -> Result<u64, ConfigError> {
    let v = arg(n)?;
    match v.parse::<u64>() {
        Ok(x) if x <= max => Ok(x),
        _ => Err(err(ORIGIN, n.line, format!("invalid {} {v:?}: expected a number up to {max}", n.key))),
    }
}

fn secs(n: &Node) -> Result<f64, ConfigError> {
    let v = arg(n)?;
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 86400.0 => Ok(x),
        _ => Err(err(ORIGIN, n.line, format!("invalid {} {v:?}", n.key))),
    }
}

/// keepalived's check_true_false for an optional flag argument: none is true.
fn flag(n: &Node) -> Result<bool, ConfigError> {
    match n.args.first().map(String::as_str) {
        None | Some("true" | "on" | "yes") => Ok(true),
        Some("false" | "off" | "no") => Ok(false),
        Some(v) => Err(err(ORIGIN, n.line, format!("invalid {} {v:?}: expected true or false", n.key))),
    }
}

fn method(n: &Node) -> Result<Forward, ConfigError> {
    match arg(n)?.to_ascii_uppercase().as_str() {
        "NAT" => Ok(Forward::Nat),
        "DR" => Ok(Forward::Dr),
        "TUN" => Ok(Forward::Tunnel),
        v => Err(err(ORIGIN, n.line, format!("invalid {} {v:?}: expected NAT, DR or TUN", n.key))),
    }
}

pub(super) fn import(text: &str, marks: &MarkMap) -> Result<Import, ConfigError> {
    let toks = tokenize(text, &['#', '!'], &['{', '}']).map_err(|(l, m)| err(ORIGIN, l, m))?;
    let mut i = 0;
    let nodes = parse(&toks, &mut i, None)?;
    let mut warnings = Vec::new();
    // Groups first: keepalived reads the whole file before it builds services, so a
    // virtual_server may name a group defined further down.
    let mut groups: Vec<Group> = Vec::new();
    for n in nodes.iter().filter(|n| n.key == "virtual_server_group") {
        let g = group(n)?;
        if let Some(o) = groups.iter().find(|o| o.name == g.name) {
            return Err(err(
                ORIGIN,
                n.line,
                format!("virtual_server_group {} defined twice (first on line {})", g.name, o.line),
            ));
        }
        groups.push(g);
    }
    let mut used = vec![false; groups.len()];
    // global_defs' script_user: the user of MISC_CHECK scripts that name none (the last
    // global_defs that gives one, as keepalived reads them in order).
    let script_user = script_user(&nodes, &mut warnings)?;
    let mut services: Vec<Service> = Vec::new();
    for n in &nodes {
        match n.key.as_str() {
            "virtual_server" => {
                // Each with the line that gave it (a group's entry, or the virtual_server).
                for (s, line) in virtual_server(n, &groups, &mut used, marks, script_user, &mut warnings)? {
                    if let Some(o) = services.iter().find(|o| o.name == s.name) {
                        return Err(err(
                            ORIGIN,
                            line,
                            format!("virtual_server {} defines service {} again", n.args.join(" "), o.name),
                        ));
                    }
                    overlap(&services, &s, ORIGIN, line)?;
                    services.push(s);
                }
            }
            "virtual_server_group" | "global_defs" => {}
            "vrrp_instance"
            | "vrrp_sync_group"
            | "vrrp_script"
            | "static_ipaddress"
            | "static_routes"
            | "static_rules"
            | "linkbeat_use_polling"
            | "track_file"
            | "garp_group" => {
                warnings.push(format!("line {}: {} is not part of load balancing, not imported", n.line, n.key))
            }
            k => warnings.push(format!("line {}: {k} is not supported, ignored", n.line)),
        }
    }
    for (g, _) in groups.iter().zip(&used).filter(|(_, u)| !**u) {
        warnings
            .push(format!("line {}: virtual_server_group {} is used by no virtual_server, ignored", g.line, g.name));
    }
    // A virtual_server over a group reads its body once per entry: its warnings once.
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    Ok(Import { services, warnings })
}

/// The most services one `virtual_server_group` entry's address range may stand for.
const MAX_RANGE: u32 = 256;

/// One service a `virtual_server` stands for: its address and port, or its firewall mark,
/// and the line that gave it (the virtual_server's, or its group entry's).
#[derive(Clone, Copy)]
struct Target {
    vip: IpAddr,
    port: Option<u16>,
    mark: Option<u32>,
    line: usize,
}

/// A `virtual_server_group NAME { ADDRESS[-END] [PORT] ... fwmark MARK ... }`.
struct Group {
    name: String,
    line: usize,
    targets: Vec<Target>,
}

fn group(n: &Node) -> Result<Group, ConfigError> {
    let l = n.line;
    let [name] = n.args.as_slice() else {
        return Err(err(ORIGIN, l, "expected `virtual_server_group NAME {`"));
    };
    let body = n.children.as_deref().ok_or_else(|| err(ORIGIN, l, "virtual_server_group needs a { ... } block"))?;
    let mut targets: Vec<Target> = Vec::new();
    for e in body {
        let el = e.line;
        if e.children.is_some() {
            return Err(err(ORIGIN, el, format!("unexpected block in virtual_server_group {name}")));
        }
        if e.key == "fwmark" {
            let m = match e.args.as_slice() {
                [m] => m.parse::<u32>().ok().filter(|&m| m != 0),
                _ => None,
            };
            let m = m.ok_or_else(|| {
                err(ORIGIN, el, format!("invalid group entry: expected `fwmark MARK` with MARK 1 to {}", u32::MAX))
            })?;
            targets.push(Target { vip: unspecified(false), port: None, mark: Some(m), line: el });
            continue;
        }
        let port = match e.args.as_slice() {
            [] => 0,
            [p] => p.parse().map_err(|_| err(ORIGIN, el, format!("invalid virtual_server_group port {p:?}")))?,
            _ => return Err(err(ORIGIN, el, "expected `ADDRESS[-END] [PORT]` or `fwmark MARK`")),
        };
        for vip in address_range(&e.key).map_err(|m| err(ORIGIN, el, m))? {
            targets.push(Target { vip, port: Some(port), mark: None, line: el });
        }
    }
    if targets.is_empty() {
        return Err(err(ORIGIN, l, format!("virtual_server_group {name} has no entries")));
    }
    Ok(Group { name: name.clone(), line: l, targets })
}

/// A group entry's addresses: one address, or keepalived's range `A-END`, where END replaces
/// the last part of A (IPv4: its last byte, in decimal; IPv6: its last 16 bits, in hex), both
/// ends included.
fn address_range(s: &str) -> Result<Vec<IpAddr>, String> {
    let bad = || format!("invalid virtual_server_group address {s:?}: expected ADDRESS or ADDRESS-END");
    let Some((a, end)) = s.rsplit_once('-') else {
        return s.parse::<IpAddr>().map(|a| vec![a]).map_err(|_| bad());
    };
    let a: IpAddr = a.parse().map_err(|_| bad())?;
    let (first, last, max) = match a {
        IpAddr::V4(v) => (u32::from(v.octets()[3]), end.parse::<u32>().map_err(|_| bad())?, 0xff),
        IpAddr::V6(v) => (u32::from(v.segments()[7]), u32::from_str_radix(end, 16).map_err(|_| bad())?, 0xffff),
    };
    if last > max || last < first {
        return Err(format!("invalid virtual_server_group range {s:?}: the end is below the start or out of range"));
    }
    if last - first + 1 > MAX_RANGE {
        return Err(format!(
            "virtual_server_group range {s:?} holds {} addresses, more than {MAX_RANGE} services",
            last - first + 1
        ));
    }
    Ok((first..=last)
        .map(|x| match a {
            IpAddr::V4(v) => {
                let o = v.octets();
                IpAddr::from([o[0], o[1], o[2], x as u8])
            }
            IpAddr::V6(v) => {
                let mut g = v.segments();
                g[7] = x as u16;
                IpAddr::from(g)
            }
        })
        .collect())
}

/// A check block being imported: the health check it becomes (its `interval`, `rise`,
/// `quiesce` and `start_down` set by the virtual_server, its `timeout` and `retry_interval`
/// from the fields beside it), and the block's line.
#[derive(PartialEq)]
struct Check {
    hc: HealthCheck,
    /// `connect_timeout` / `misc_timeout`, if given.
    timeout: Option<f64>,
    /// Seconds to the check after a failure that has not yet taken the server down.
    retry_interval: f64,
    line: usize,
}

impl Check {
    /// Two real servers' checks are alike: the same checks in the same order (wherever
    /// their blocks stand).
    fn same_list(a: &[Check], b: &[Check]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (&x.hc, x.timeout, x.retry_interval) == (&y.hc, y.timeout, y.retry_interval))
    }

    /// A check of `kind` from the block at `line`, every option at its default.
    fn new(kind: HealthCheckKind, line: usize) -> Check {
        Check { hc: HealthCheck::new(kind), timeout: None, retry_interval: 0.0, line }
    }
}

impl Check {
    /// keepalived's failure confirmation from the retry options `r` (the check's, else its
    /// real_server's or virtual_server's), else the checker's defaults `retry` and `delay`
    /// (seconds): a server goes down after `retry` + 1 failures in a row, ferrovs' `fall`,
    /// each retry `delay_before_retry` after the failure.
    fn retries(&mut self, r: Retry, retry: u32, delay: f64) {
        self.hc.fall = r.retry.unwrap_or(retry) + 1;
        self.retry_interval = r.delay.unwrap_or(delay);
    }

    /// Takes `o` if it is one of the options every connecting check has (true): its
    /// `connect_timeout`, `connect_port` (0: the real server's), and its retry options into
    /// `own`.
    fn connection_option(&mut self, o: &Node, own: &mut Retry) -> Result<bool, ConfigError> {
        match o.key.as_str() {
            "connect_timeout" => self.timeout = Some(secs(o)?),
            "connect_port" => {
                let p = num(o, 65535)? as u16;
                self.hc.port = (p != 0).then_some(p);
            }
            "connect_ip" => {
                let a = arg(o)?;
                let ip: IpAddr = a.parse().map_err(|_| err(ORIGIN, o.line, format!("invalid connect_ip {a:?}")))?;
                if self.hc.kind == HealthCheckKind::Exec || ip.is_unspecified() || ip.is_multicast() {
                    return Err(err(ORIGIN, o.line, format!("connect_ip {ip} cannot be checked")));
                }
                self.hc.address = Some(ip);
            }
            "bindto" => {
                let a = arg(o)?;
                let ip: IpAddr = a.parse().map_err(|_| err(ORIGIN, o.line, format!("invalid bindto {a:?}")))?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(err(ORIGIN, o.line, format!("bindto {ip} is not a host's address")));
                }
                self.hc.source = Some(ip);
            }
            _ => return own.take(o),
        }
        Ok(true)
    }
}

/// `retry` and `delay_before_retry` given at a level above a check (its real_server, its
/// virtual_server), for the checks that give none; keepalived >= 2.0 takes the check's, else
/// the real_server's, else the virtual_server's, else the checker's default.
#[derive(Clone, Copy, Default)]
struct Retry {
    retry: Option<u32>,
    delay: Option<f64>,
}

impl Retry {
    /// Takes `n` if it is one of the two options (true), from the level `n` is at.
    fn take(&mut self, n: &Node) -> Result<bool, ConfigError> {
        match n.key.as_str() {
            "retry" | "nb_get_retry" => self.retry = Some(num(n, 999)? as u32),
            "delay_before_retry" => self.delay = Some(secs(n)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// This level's options, else `outer`'s.
    fn or(self, outer: Retry) -> Retry {
        Retry { retry: self.retry.or(outer.retry), delay: self.delay.or(outer.delay) }
    }
}

/// A TCP_CHECK, HTTP_GET or SSL_GET block of a real server (`vhost`: the virtual_server's
/// `virtualhost`, the default Host of its HTTP checks; `outer`: the retry options of the
/// real_server and virtual_server).
fn check_block(n: &Node, vhost: Option<&str>, outer: Retry, warnings: &mut Vec<String>) -> Result<Check, ConfigError> {
    // SSL_GET: HTTP_GET over TLS (`https`; keepalived verifies no certificate either).
    let ssl = n.key == "SSL_GET";
    let http = n.key == "HTTP_GET" || ssl;
    let kind = match n.key.as_str() {
        "HTTP_GET" => HealthCheckKind::Http,
        "SSL_GET" => HealthCheckKind::Https,
        _ => HealthCheckKind::Tcp,
    };
    let mut own = Retry::default();
    let mut c = Check::new(kind, n.line);
    c.hc.host = vhost.filter(|_| http).map(str::to_string);
    let mut urls = 0;
    for o in n.children.as_deref().unwrap_or(&[]) {
        if c.connection_option(o, &mut own)? {
            continue;
        }
        match o.key.as_str() {
            "virtualhost" if http => c.hc.host = Some(arg(o)?.to_string()),
            "url" if http => {
                urls += 1;
                if urls > 1 {
                    warnings
                        .push(format!("line {}: {}: only the first url is checked, this one ignored", o.line, n.key));
                    continue;
                }
                for u in o.children.as_deref().unwrap_or(&[]) {
                    match u.key.as_str() {
                        "path" => c.hc.path = Some(arg(u)?.to_string()),
                        "digest" => {
                            let d = arg(u)?;
                            if d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return Err(err(ORIGIN, u.line, format!("digest {d:?} is not an MD5 in hex")));
                            }
                            c.hc.digest = Some(d.to_ascii_lowercase());
                        }
                        "virtualhost" => c.hc.host = Some(arg(u)?.to_string()),
                        // One code, or keepalived's 2xx default written as a range.
                        "status_code" => match u.args.as_slice() {
                            [r] if r == "200-299" => c.hc.status = None,
                            [v] => match v.parse::<u16>() {
                                Ok(x) if (100..=599).contains(&x) => c.hc.status = Some(x),
                                _ => return Err(err(ORIGIN, u.line, format!("invalid status_code {v:?}"))),
                            },
                            _ => warnings.push(format!(
                                "line {}: status_code {}: one code (or 200-299) is imported, any 2xx is expected",
                                u.line,
                                u.args.join(" ")
                            )),
                        },
                        k => warnings.push(format!("line {}: url option {k} is not supported, ignored", u.line)),
                    }
                }
            }
            // The virtualhost goes as SNI whenever it is a DNS name.
            "enable_sni" if ssl => {}
            k => warnings.push(format!("line {}: {} option {k} is not supported, ignored", o.line, n.key)),
        }
    }
    // keepalived's tcp_epilog / http epilog take a server down when a check fails with `retry`
    // retries already spent: retry N is N + 1 failures in a row, ferrovs' fall; each retry
    // comes `delay_before_retry` after the failure. keepalived >= 2.0's defaults (check_api.c
    // `queue_checker`): 1 retry, 1 s before it; HTTP_GET and SSL_GET 3 s (check_http.c).
    c.retries(own.or(outer), 1, if http { 3.0 } else { 1.0 });
    Ok(c)
}

/// A `DNS_CHECK` block: a `dns` check of its `name` and `type` (keepalived's defaults, `.` and
/// `SOA`, are ferrovs' too, so they are left unset when not given), to `connect_port` (else
/// the real server's), within `connect_timeout`.
fn dns_block(n: &Node, outer: Retry, warnings: &mut Vec<String>) -> Result<Check, ConfigError> {
    let mut own = Retry::default();
    let mut c = Check::new(HealthCheckKind::Dns, n.line);
    for o in n.children.as_deref().unwrap_or(&[]) {
        if c.connection_option(o, &mut own)? {
            continue;
        }
        match o.key.as_str() {
            "name" => {
                let name = arg(o)?;
                if !HealthCheck::valid_query_name(name) {
                    return Err(err(ORIGIN, o.line, format!("DNS_CHECK name {name:?} is not a DNS name")));
                }
                c.hc.query_name = Some(name.to_string());
            }
            // keepalived logs an unknown type and keeps its default (SOA); so does the import.
            "type" => match HealthCheck::dns_type_code(arg(o)?) {
                Some(_) => c.hc.query_type = Some(arg(o)?.to_ascii_uppercase()),
                None => warnings.push(format!(
                    "line {}: DNS_CHECK type {}: not a type keepalived knows, SOA is queried (as keepalived does)",
                    o.line,
                    arg(o)?
                )),
            },
            k => warnings.push(format!("line {}: DNS_CHECK option {k} is not supported, ignored", o.line)),
        }
    }
    // keepalived's DNS_CHECK: 3 retries by default (check_dns.c), 1 s before each.
    c.retries(own.or(outer), 3, 1.0);
    Ok(c)
}

/// A `UDP_CHECK` block: a `udp` check of its `payload` and `require_reply` (with its data),
/// or a `PING_CHECK` block: a `ping` check; to `connect_port` (else the real server's),
/// within `connect_timeout`, with keepalived's retry defaults (1 retry, 1 s before it).
fn udp_ping_block(n: &Node, outer: Retry, warnings: &mut Vec<String>) -> Result<Check, ConfigError> {
    let udp = n.key == "UDP_CHECK";
    let mut own = Retry::default();
    let mut c = Check::new(if udp { HealthCheckKind::Udp } else { HealthCheckKind::Ping }, n.line);
    // min_reply_length and max_reply_length, with their lines.
    let mut lengths: [Option<(u16, usize)>; 2] = [None, None];
    let hex = |o: &Node, wild: bool| -> Result<String, ConfigError> {
        let h = o.args.join(" ");
        match HealthCheck::hex_octets(&h, wild) {
            Some(_) => Ok(h),
            None => Err(err(ORIGIN, o.line, format!("UDP_CHECK {} {h:?} is not a hex string", o.key))),
        }
    };
    for o in n.children.as_deref().unwrap_or(&[]) {
        if !udp && o.key == "connect_port" {
            warnings.push(format!("line {}: PING_CHECK connect_port: ICMP echo has no port, ignored", o.line));
            continue;
        }
        if c.connection_option(o, &mut own)? {
            continue;
        }
        match o.key.as_str() {
            "payload" if udp => c.hc.payload = Some(hex(o, false)?),
            "require_reply" if udp => {
                c.hc.require_reply = true;
                if !o.args.is_empty() {
                    c.hc.reply = Some(hex(o, true)?);
                }
            }
            "min_reply_length" if udp => lengths[0] = Some((num(o, 65535)? as u16, o.line)),
            "max_reply_length" if udp => lengths[1] = Some((num(o, 65535)? as u16, o.line)),
            k => warnings.push(format!("line {}: {} option {k} is not supported, ignored", o.line, n.key)),
        }
    }
    // keepalived holds an answer to the lengths only when require_reply gives data.
    if c.hc.reply.is_some() {
        if let (Some((lo, _)), Some((hi, line))) = (lengths[0], lengths[1]) {
            if lo > hi {
                return Err(err(
                    ORIGIN,
                    line,
                    format!("UDP_CHECK max_reply_length {hi} is below min_reply_length {lo}: the check always fails"),
                ));
            }
        }
        c.hc.min_reply_length = lengths[0].map(|l| l.0);
        c.hc.max_reply_length = lengths[1].map(|l| l.0);
    } else {
        for (l, line) in lengths.iter().flatten() {
            warnings.push(format!(
                "line {line}: UDP_CHECK reply length {l} without require_reply data: ignored, as keepalived does"
            ));
        }
    }
    c.retries(own.or(outer), 1, 1.0);
    Ok(c)
}

/// An `SMTP_CHECK` block: an `smtp` check with its `helo_name`, to `connect_port` (else the
/// real server's), within `connect_timeout`, with keepalived's retry defaults (1 retry, 1 s
/// before it). Its deprecated `host` sub-blocks (more servers to check) are not imported.
fn smtp_block(n: &Node, outer: Retry, warnings: &mut Vec<String>) -> Result<Check, ConfigError> {
    let mut own = Retry::default();
    let mut c = Check::new(HealthCheckKind::Smtp, n.line);
    for o in n.children.as_deref().unwrap_or(&[]) {
        if c.connection_option(o, &mut own)? {
            continue;
        }
        match o.key.as_str() {
            "helo_name" => {
                let h = arg(o)?;
                if !HealthCheck::valid_helo_name(h) {
                    return Err(err(ORIGIN, o.line, format!("SMTP_CHECK helo_name {h:?} is not one word")));
                }
                c.hc.helo_name = Some(h.to_string());
            }
            "host" => warnings.push(format!(
                "line {}: SMTP_CHECK host (deprecated by keepalived: more servers checked by one checker) is not \
                 supported, ignored: the real server itself is checked",
                o.line
            )),
            k => warnings.push(format!("line {}: SMTP_CHECK option {k} is not supported, ignored", o.line)),
        }
    }
    c.retries(own.or(outer), 1, 1.0);
    Ok(c)
}

/// A `MISC_CHECK` block: an `exec` check running `misc_path` (`None`, with a warning, when it
/// has none: keepalived skips such a checker).
fn misc_block(
    n: &Node,
    outer: Retry,
    script_user: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<Check>, ConfigError> {
    let mut own = Retry::default();
    let mut c = Check::new(HealthCheckKind::Exec, n.line);
    for o in n.children.as_deref().unwrap_or(&[]) {
        match o.key.as_str() {
            "misc_path" => {
                let argv = script_argv(o)?;
                if !argv[0].starts_with('/') {
                    return Err(err(
                        ORIGIN,
                        o.line,
                        format!(
                            "misc_path {:?}: the script must be an absolute path (ferrovs runs it without a shell \
                             or PATH look-up)",
                            argv[0]
                        ),
                    ));
                }
                c.hc.command = argv;
            }
            "misc_timeout" => c.timeout = Some(secs(o)?),
            "misc_dynamic" => warnings.push(format!(
                "line {}: MISC_CHECK misc_dynamic: exit codes 2-255 set the weight in keepalived; here every \
                 non-zero exit means down",
                o.line
            )),
            "user" => {
                c.hc.user = Some(arg(o)?.to_string());
                if let Some(g) = o.args.get(1) {
                    warnings.push(format!(
                        "line {}: MISC_CHECK user {} {g}: a group is not supported, the script runs with the \
                         user's primary group",
                        o.line, o.args[0]
                    ));
                }
            }
            "retry" | "nb_get_retry" | "delay_before_retry" => {
                own.take(o)?;
            }
            k => warnings.push(format!("line {}: MISC_CHECK option {k} is not supported, ignored", o.line)),
        }
    }
    if c.hc.command.is_empty() {
        warnings.push(format!("line {}: MISC_CHECK without misc_path: ignored (as keepalived does)", n.line));
        return Ok(None);
    }
    if c.hc.user.is_none() {
        c.hc.user = script_user.map(str::to_string);
    }
    if c.hc.user.is_none() {
        // keepalived runs it as `keepalived_script` when that user exists, else as root; an
        // import cannot know which the checked machine has, and root must not be a surprise.
        warnings.push(format!(
            "line {}: MISC_CHECK names no user (nor does global_defs' script_user): keepalived runs it as \
             keepalived_script if that user exists, else as root; imported to run as root: give the check a \
             `user` unless it needs root",
            n.line
        ));
    }
    // keepalived's MISC_CHECK: no retry by default (check_misc.c sets default_retry 0), 1 s
    // before one when given.
    c.retries(own.or(outer), 0, 1.0);
    Ok(Some(c))
}

/// global_defs' `script_user USER [GROUP]`: the user MISC_CHECK scripts run as when they name
/// none. Its other options are not part of load balancing (one warning per global_defs).
fn script_user<'a>(nodes: &'a [Node], warnings: &mut Vec<String>) -> Result<Option<&'a str>, ConfigError> {
    let mut user = None;
    for g in nodes.iter().filter(|n| n.key == "global_defs") {
        let mut others = false;
        for o in g.children.as_deref().unwrap_or(&[]) {
            if o.key != "script_user" {
                others = true;
                continue;
            }
            user = Some(arg(o)?);
            if let Some(grp) = o.args.get(1) {
                warnings.push(format!(
                    "line {}: script_user {} {grp}: a group is not supported, scripts run with the user's \
                     primary group",
                    o.line, o.args[0]
                ));
            }
        }
        if others {
            warnings.push(format!(
                "line {}: global_defs is not part of load balancing, not imported (but its script_user)",
                g.line
            ));
        }
    }
    Ok(user)
}

/// The argv of a `misc_path` line, as keepalived splits a script's command: words separated
/// by white space, `'...'` taken as it is, `"..."` with `\` escapes, `\` outside quotes
/// escaping the next character. A whole command in double quotes (the usual way) reaches here
/// as one argument and is split; an argument that was double-quoted among others stays one word.
fn script_argv(n: &Node) -> Result<Vec<String>, ConfigError> {
    let text = match n.args.as_slice() {
        [one] => one.clone(),
        _ => n
            .args
            .iter()
            .zip(&n.quoted)
            .map(|(a, &q)| if q { format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")) } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let argv = split_words(&text).map_err(|m| err(ORIGIN, n.line, format!("{}: {m}", n.key)))?;
    if argv.is_empty() {
        return Err(err(ORIGIN, n.line, format!("{} needs a script", n.key)));
    }
    Ok(argv)
}

/// A notify script's argv (`notify_up`, `quorum_down`, ...): as [`script_argv`], and an
/// absolute path (ferrovs runs it without a shell or PATH look-up).
fn notify_argv(n: &Node) -> Result<Vec<String>, ConfigError> {
    let argv = script_argv(n)?;
    if !argv[0].starts_with('/') {
        return Err(err(
            ORIGIN,
            n.line,
            format!(
                "{} {:?}: the script must be an absolute path (ferrovs runs it without a shell or PATH look-up)",
                n.key, argv[0]
            ),
        ));
    }
    Ok(argv)
}

/// A service's `[service.notify]` from its real servers' `notify_up` / `notify_down` (`per`,
/// in order) and its own `quorum_up` / `quorum_down`, run as global_defs' `script_user`.
/// ferrovs has one program per event and service, told the server by `FERROVS_SERVER`: a
/// script that is not the same on every real server is not imported (it would run for
/// servers keepalived never ran it for), with a warning. `None`: no script at all.
/// A real server's `notify_up` and `notify_down`, each with its line.
type ServerNotify = [Option<(Vec<String>, usize)>; 2];

fn notify_of(
    service: &str,
    per: &[ServerNotify],
    quorum_up: Vec<String>,
    quorum_down: Vec<String>,
    script_user: Option<&str>,
    warnings: &mut Vec<String>,
) -> Option<Notify> {
    let mut ud: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (i, key) in ["notify_up", "notify_down"].into_iter().enumerate() {
        let Some((first, line)) = per.iter().find_map(|p| p[i].as_ref()) else { continue };
        if per.iter().all(|p| p[i].as_ref().is_some_and(|(c, _)| c == first)) {
            ud[i] = first.clone();
        } else {
            warnings.push(format!(
                "line {line}: {key} is not the same script on every real server of {service} (ferrovs runs one \
                 per service, FERROVS_SERVER naming the server): not imported"
            ));
        }
    }
    let [up, down] = ud;
    if up.is_empty() && down.is_empty() && quorum_up.is_empty() && quorum_down.is_empty() {
        return None;
    }
    if script_user.is_none() {
        warnings.push(format!(
            "{service}: notify scripts: global_defs names no script_user, so they are imported to run as root \
             (keepalived runs them as keepalived_script if that user exists): set [service.notify] user unless \
             they need root"
        ));
    }
    Some(Notify { up, down, quorum_up, quorum_down, user: script_user.map(str::to_string), ..Notify::new() })
}

/// Shell-like word splitting without expansions (see [`script_argv`]).
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => out.extend(cur.take()),
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => w.push(x),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => w.push(x),
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(x) => w.push(x),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                let w = cur.get_or_insert_with(String::new);
                if let Some(x) = chars.next() {
                    w.push(x);
                }
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur);
    Ok(out)
}

fn virtual_server(
    vs: &Node,
    groups: &[Group],
    used: &mut [bool],
    marks: &MarkMap,
    script_user: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(Service, usize)>, ConfigError> {
    let l = vs.line;
    let body = vs.children.as_deref().ok_or_else(|| err(ORIGIN, l, "virtual_server needs a { ... } block"))?;
    // virtual_server IP [PORT] | virtual_server fwmark N | virtual_server group NAME
    // Port 0 or none (keepalived >= 2.0.7) is IPVS's port-zero service: every port of the VIP.
    let targets: Vec<Target> =
        match vs.args.as_slice() {
            [f, m] if f == "fwmark" => {
                // Mark 0 is "no mark" to IPVS (ipvsadm -f 0: "zero is invalid").
                let m: u32 = m.parse().ok().filter(|&m| m != 0).ok_or_else(|| {
                    err(ORIGIN, l, format!("invalid firewall mark {m:?}: expected 1 to {}", u32::MAX))
                })?;
                vec![Target { vip: unspecified(false), port: None, mark: Some(m), line: l }]
            }
            // One service per address (and port) or mark of the group, each with this body, as
            // keepalived makes one IPVS service of each.
            [g, name] if g == "group" => match groups.iter().position(|g| &g.name == name) {
                Some(k) => {
                    used[k] = true;
                    groups[k].targets.clone()
                }
                None => return Err(err(ORIGIN, l, format!("virtual_server_group {name} is not defined"))),
            },
            [ip] | [ip, _] => {
                let ip: IpAddr =
                    ip.parse().map_err(|_| err(ORIGIN, l, format!("invalid virtual_server address {ip:?}")))?;
                let p: u16 = match vs.args.get(1) {
                    None => 0,
                    Some(p) => p.parse().map_err(|_| err(ORIGIN, l, format!("invalid virtual_server port {p:?}")))?,
                };
                vec![Target { vip: ip, port: Some(p), mark: None, line: l }]
            }
            _ => return Err(err(
                ORIGIN,
                l,
                "expected `virtual_server ADDRESS PORT`, `virtual_server fwmark MARK` or `virtual_server group NAME`",
            )),
        };

    let mut protocol = Protocol::Tcp;
    let mut scheduler: Option<String> = None;
    let mut forward = Forward::Nat;
    let mut persist: Option<u32> = None;
    let mut granularity: Option<&Node> = None;
    let mut interval = 60.0; // keepalived's default delay_loop
    let mut v6 = false;
    let mut family_given = false;
    // virtual_server's inhibit_on_failure: the default of its real servers.
    let mut vs_inhibit = false;
    // The default Host header of its HTTP_GET checks.
    let mut vhost: Option<&str> = None;
    let mut vs_retry = Retry::default();
    let mut reals: Vec<&Node> = Vec::new();
    let mut sorry: Option<&Node> = None;
    let mut alpha: Option<&Node> = None;
    let mut quorum: u32 = 1;
    let mut hysteresis: Option<(u32, usize)> = None;
    let (mut quorum_up, mut quorum_down) = (Vec::new(), Vec::new());
    let mut ops: Option<usize> = None;
    // Scheduler flags (`sh-port`, `mh-fallback`, `flag-1`, ...) with their lines.
    let mut sched_flags: Vec<(String, usize)> = Vec::new();
    for n in body {
        match n.key.as_str() {
            "real_server" => reals.push(n),
            "sorry_server" => sorry = Some(n),
            "retry" | "delay_before_retry" => {
                vs_retry.take(n)?;
            }
            "delay_loop" => interval = secs(n)?,
            "lb_algo" | "lvs_sched" => {
                let s = ferrovs_sched::check_name(arg(n)?).map_err(|e| err(ORIGIN, n.line, e.to_string()))?;
                scheduler = Some(s.to_string());
            }
            "lb_kind" | "lvs_method" => forward = method(n)?,
            // keepalived: no value is IPVS_SVC_PERSISTENT_TIMEOUT; 0 is invalid.
            "persistence_timeout" if n.args.is_empty() => persist = Some(PERSISTENT_TIMEOUT),
            // ferrovs, as ipvsadm, holds persistence to 31 days.
            "persistence_timeout" => match num(n, MAX_PERSISTENCE_S as u64)? {
                0 => return Err(err(ORIGIN, n.line, "invalid persistence_timeout \"0\": must be at least 1")),
                t => persist = Some(t as u32),
            },
            "persistence_granularity" => granularity = Some(n),
            "protocol" => {
                protocol = match arg(n)?.to_ascii_uppercase().as_str() {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    v => {
                        warnings
                            .push(format!("line {}: protocol {v} is not supported, virtual_server skipped", n.line));
                        return Ok(Vec::new());
                    }
                }
            }
            "ip_family" => {
                v6 = arg(n)? == "inet6";
                family_given = true;
            }
            "inhibit_on_failure" => vs_inhibit = flag(n)?,
            "virtualhost" => vhost = Some(arg(n)?),
            // ferrovs always keeps the sorry server quiesced while a real server serves.
            "sorry_server_inhibit" => {}
            "alpha" => alpha = flag(n)?.then_some(n),
            // keepalived: 1 to UINT_MAX; the hysteresis 0 to UINT_MAX, fixed below.
            "quorum" => {
                quorum = match num(n, u64::from(u32::MAX))? {
                    0 => return Err(err(ORIGIN, n.line, "invalid quorum \"0\": must be at least 1")),
                    q => q as u32,
                }
            }
            "hysteresis" => hysteresis = Some((num(n, u64::from(u32::MAX))? as u32, n.line)),
            "quorum_up" => quorum_up = notify_argv(n)?,
            "quorum_down" => quorum_down = notify_argv(n)?,
            // One-packet scheduling (IPVS's IP_VS_SVC_F_ONEPACKET).
            "ops" => ops = flag(n)?.then_some(n.line),
            "sh-fallback" | "sh-port" | "mh-fallback" | "mh-port" | "flag-1" | "flag-2" | "flag-3" => {
                sched_flags.push((n.key.clone(), n.line))
            }
            k => warnings.push(format!("line {}: virtual_server option {k} is not supported, ignored", n.line)),
        }
    }

    // A mark service's family (IPVS keys it by family and mark): ip_family, else its first
    // real server's.
    let mark_v6 = if family_given {
        v6
    } else {
        reals.first().and_then(|r| r.args.first()).and_then(|a| a.parse::<IpAddr>().ok()).map_or(v6, |a| a.is_ipv6())
    };
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let (vip, port, mark, l) = (t.vip, t.port, t.mark, t.line);
        let mut persist = persist;
        let (vip, ports) = match (mark, port) {
            (Some(m), _) => match marks.get(&(m, mark_v6)) {
                Some((ip, ports)) => (*ip, ports.clone()),
                None => {
                    warnings.push(format!(
                        "line {l}: firewall mark {m}: the addresses and ports it selects are set by iptables/nftables \
                         rules, not by keepalived; imported with vip {} and all ports: set vip and ports by hand \
                         (or give the rules: --marks)",
                        unspecified(mark_v6)
                    ));
                    (unspecified(mark_v6), Vec::new())
                }
            },
            (None, Some(0)) => (vip, Vec::new()),
            (None, Some(p)) => (vip, vec![PortRange { lo: p, hi: p }]),
            (None, None) => (vip, Vec::new()),
        };
        let name = match mark {
            Some(m) => fwmark_name(m, vip.is_ipv6()),
            None => service_name(protocol, vip, port.unwrap_or(0)),
        };
        let mut svc = blank_service(name, vip, protocol, ports);
        svc.fwmark = mark;
        svc.quorum = quorum;
        // keepalived sets a hysteresis not below the quorum to quorum - 1, saying so.
        svc.hysteresis = match hysteresis {
            Some((h, hl)) if h >= quorum => {
                warnings.push(format!(
                    "line {hl}: hysteresis {h} is not less than the quorum {quorum}: hysteresis {} (as keepalived)",
                    quorum - 1
                ));
                quorum - 1
            }
            Some((h, _)) => h,
            None => 0,
        };
        svc.forward = forward;
        if let Some(s) = &scheduler {
            svc.scheduler = s.clone();
        }
        if port == Some(0) && persist.is_none() && granularity.is_none() {
            warnings.push(format!(
                "line {l}: virtual_server {}: a service on every port must be persistent (as keepalived): \
                 persistence timeout {PERSISTENT_TIMEOUT} s",
                vs.args.join(" ")
            ));
            persist = Some(PERSISTENT_TIMEOUT);
        }
        // A granularity alone makes the service persistent (keepalived's pgr_handler).
        if let Some(t) = persist.or(granularity.map(|_| PERSISTENT_TIMEOUT)) {
            let nm = match granularity {
                Some(n) => netmask(arg(n)?, vip).map_err(|e| err(ORIGIN, n.line, e))?,
                None => max_prefix(vip),
            };
            svc.persistence = Some(Persistence { timeout: t, netmask: nm });
        }
        // Checked against the service's scheduler wherever lvs_sched stands (keepalived
        // takes an sh- flag only after lvs_sched sh); one that does not apply is left out,
        // as keepalived and IPVS leave it without effect.
        for (f, line) in &sched_flags {
            match SchedFlags::parse(&svc.scheduler, [f.as_str()]) {
                Ok(one) => {
                    svc.sched_flags.fallback |= one.fallback;
                    svc.sched_flags.port |= one.port;
                }
                Err(e) => warnings.push(format!("line {line}: {e}, ignored")),
            }
        }
        if let Some(line) = ops {
            if protocol == Protocol::Udp {
                svc.one_packet = true;
            } else {
                // IPVS keeps the flag on a TCP service without effect; the config refuses it.
                warnings.push(format!("line {line}: ops (one-packet scheduling) applies to UDP services, ignored"));
            }
        }

        // The checks of the first checked real server become the service's; a server with
        // others gets its own (none for an unchecked one, which keepalived never takes
        // down). All of a server's checks must pass, as keepalived's checkers.
        let mut rs_checks: Vec<Vec<Check>> = Vec::new();
        // inhibit_on_failure of each real server (its checks' on_fail).
        let mut inhibits: Vec<(bool, usize)> = Vec::new();
        let mut ftp_hint = false;
        // Each real server's notify_up and notify_down (ferrovs has one of each per service).
        let mut notifies: Vec<ServerNotify> = Vec::new();
        for rs in &reals {
            let rl = rs.line;
            let (addr, rport) = match rs.args.as_slice() {
                [a, p] => (a, Some(p)),
                [a] => (a, None),
                _ => return Err(err(ORIGIN, rl, "expected `real_server ADDRESS PORT`")),
            };
            let address: IpAddr =
                addr.parse().map_err(|_| err(ORIGIN, rl, format!("invalid real_server address {addr:?}")))?;
            let rport = match rport {
                None => None,
                Some(p) => {
                    let p: u16 = p.parse().map_err(|_| err(ORIGIN, rl, format!("invalid real_server port {p:?}")))?;
                    (p != 0).then_some(p)
                }
            };
            if svc
                .real_servers
                .iter()
                .any(|o| o.address == address && svc.server_port(o.port) == svc.server_port(rport))
            {
                // As keepalived does ("real server ... is duplicated - removing second rs").
                warnings.push(format!(
                    "line {rl}: real_server {} is listed twice in {}, skipped",
                    rs.args.join(" "),
                    svc.name
                ));
                continue;
            }
            ftp_hint |= rport == Some(21);
            let mut r = RealServer {
                address,
                port: rport,
                weight: 1,
                upper: 0,
                lower: 0,
                forward: None,
                proxy_protocol: None,
                health_checks: None,
            };
            let mut thr_line = rl;
            let mut inhibit = vs_inhibit;
            let mut mine: Vec<Check> = Vec::new();
            let mut notify: ServerNotify = [None, None];
            let mut rs_retry = Retry::default();
            for n in rs.children.as_deref().unwrap_or(&[]) {
                rs_retry.take(n)?;
            }
            let outer = rs_retry.or(vs_retry);
            for n in rs.children.as_deref().unwrap_or(&[]) {
                match n.key.as_str() {
                    "retry" | "delay_before_retry" => {} // taken above
                    "weight" => r.weight = num(n, 65535)? as u32,
                    "uthreshold" => (r.upper, thr_line) = (num(n, MAX_THRESHOLD as u64)? as u32, n.line),
                    "lthreshold" => (r.lower, thr_line) = (num(n, MAX_THRESHOLD as u64)? as u32, n.line),
                    "inhibit_on_failure" => inhibit = flag(n)?,
                    "notify_up" => notify[0] = Some((notify_argv(n)?, n.line)),
                    "notify_down" => notify[1] = Some((notify_argv(n)?, n.line)),
                    "lvs_method" | "lb_kind" => {
                        let f = method(n)?;
                        r.forward = (f != svc.forward).then_some(f);
                    }
                    "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK"
                    | "SMTP_CHECK" => {
                        let c = match n.key.as_str() {
                            "MISC_CHECK" => misc_block(n, outer, script_user, warnings)?,
                            "DNS_CHECK" => Some(dns_block(n, outer, warnings)?),
                            "UDP_CHECK" | "PING_CHECK" => Some(udp_ping_block(n, outer, warnings)?),
                            "SMTP_CHECK" => Some(smtp_block(n, outer, warnings)?),
                            _ => Some(check_block(n, vhost, outer, warnings)?),
                        };
                        let Some(c) = c else { continue };
                        ftp_hint |= c.hc.port == Some(21);
                        mine.push(c);
                    }
                    k if k.ends_with("_CHECK") || k.ends_with("_GET") => warnings.push(format!(
                        "line {}: {k} is not supported (TCP_CHECK, HTTP_GET, SSL_GET, DNS_CHECK, UDP_CHECK, \
                         PING_CHECK, SMTP_CHECK and MISC_CHECK are imported), ignored",
                        n.line
                    )),
                    k => warnings.push(format!("line {}: real_server option {k} is not supported, ignored", n.line)),
                }
            }
            if r.upper != 0 && r.lower != 0 && r.upper < r.lower {
                return Err(err(
                    ORIGIN,
                    thr_line,
                    format!("lthreshold {} is above uthreshold {} of real_server {address}", r.lower, r.upper),
                ));
            }
            if r.address.is_ipv4() != svc.vip.is_ipv4()
                && mark.is_some()
                && svc.vip.is_unspecified()
                && svc.real_servers.is_empty()
            {
                // fwmark service without a mapping: take the family from the (first) real server.
                svc.vip = unspecified(r.address.is_ipv6());
                svc.name = fwmark_name(mark.unwrap_or(0), svc.vip.is_ipv6());
            }
            if r.address.is_ipv4() != svc.vip.is_ipv4() {
                return Err(err(
                    ORIGIN,
                    rl,
                    format!(
                        "real_server {address} is not in the address family of virtual_server {} \
                         (ferrovs mixes IPv4 and IPv6 only in full NAT)",
                        vs.args.join(" ")
                    ),
                ));
            }
            for c in &mine {
                let to = c.hc.address.unwrap_or(address);
                if let Some(src) = c.hc.source.filter(|s| s.is_ipv4() != to.is_ipv4()) {
                    return Err(err(
                        ORIGIN,
                        c.line,
                        format!("bindto {src} cannot reach {to}: not of its address family"),
                    ));
                }
            }
            rs_checks.push(mine);
            svc.real_servers.push(r);
            inhibits.push((inhibit, rl));
            notifies.push(notify);
        }
        svc.notify = notify_of(&svc.name, &notifies, quorum_up.clone(), quorum_down.clone(), script_user, warnings);
        if let Some(n) = sorry {
            let (addr, port) = match n.args.as_slice() {
                [a, p] => (a, Some(p)),
                [a] => (a, None),
                _ => return Err(err(ORIGIN, n.line, "expected `sorry_server ADDRESS PORT`")),
            };
            let address: IpAddr =
                addr.parse().map_err(|_| err(ORIGIN, n.line, format!("invalid sorry_server address {addr:?}")))?;
            if address.is_ipv4() != svc.vip.is_ipv4() {
                return Err(err(
                    ORIGIN,
                    n.line,
                    format!(
                        "sorry_server {address} is not in the address family of virtual_server {}",
                        vs.args.join(" ")
                    ),
                ));
            }
            let port = match port {
                None => None,
                Some(p) => {
                    let p: u16 =
                        p.parse().map_err(|_| err(ORIGIN, n.line, format!("invalid sorry_server port {p:?}")))?;
                    (p != 0).then_some(p)
                }
            };
            if svc.real_servers.iter().any(|o| o.address == address && svc.server_port(o.port) == svc.server_port(port))
            {
                warnings.push(format!(
                    "line {}: sorry_server {address} is also a real_server of {}, ignored",
                    n.line, svc.name
                ));
            } else {
                svc.sorry_server = Some(SorryServer { address, port });
            }
        }

        // The first checked server's checks and inhibit_on_failure become the service's.
        let first = rs_checks.iter().position(|m| !m.is_empty());
        if let Some(f) = first {
            let (list, inhibit) = (&rs_checks[f], inhibits[f].0);
            // A server's checks, failing it as its inhibit_on_failure says (quiesced, else removed).
            let finish = |list: &[Check], inhibit: bool| -> Vec<HealthCheck> {
                list.iter()
                    .map(|c| {
                        // Only while a failure is being confirmed; none when it is the interval.
                        let retry_interval = Some(c.retry_interval).filter(|&r| c.hc.fall > 1 && r != interval);
                        // keepalived's default: connect_timeout 5 s; misc_timeout the delay_loop.
                        let timeout =
                            c.timeout.unwrap_or(if c.hc.kind == HealthCheckKind::Exec { interval } else { 5.0 });
                        HealthCheck {
                            interval,
                            retry_interval,
                            timeout,
                            rise: 1,
                            quiesce: inhibit,
                            start_down: alpha.is_some(),
                            ..c.hc.clone()
                        }
                    })
                    .collect()
            };
            // A check with a connect_ip is its server's alone: then every server has its own.
            let hoist = !list.iter().any(|c| c.hc.address.is_some());
            for ((r, mine), (own, _)) in svc.real_servers.iter_mut().zip(&rs_checks).zip(&inhibits) {
                if !hoist || !Check::same_list(list, mine) || (*own != inhibit && !mine.is_empty()) {
                    r.health_checks = Some(finish(mine, *own));
                }
            }
            if hoist {
                svc.health_checks = finish(list, inhibit);
            }
        } else if let Some(a) = alpha {
            warnings.push(format!(
                "line {}: alpha on {}, which has no health check: ignored (keepalived's unchecked real servers \
                 are always up)",
                a.line, svc.name
            ));
        }
        if mark.is_some() && svc.ports.is_empty() && ftp_hint && protocol == Protocol::Tcp {
            svc.ftp = Some(FtpOptions::default());
            warnings.push(format!(
                "line {l}: service {:?}: firewall mark with real servers or checks on port 21: enabled the FTP helper (ftp = true)",
                svc.name
            ));
        } else {
            maybe_ftp(&mut svc, l, warnings, "TCP port 21 (ip_vs_ftp)");
        }
        out.push((svc, l));
    }
    Ok(out)
}

/// How deep `include` lines may nest (keepalived has no limit; a file that includes itself
/// would never end).
const MAX_INCLUDE_DEPTH: usize = 8;

/// A keepalived.conf with its `include` lines replaced by the files they name: the joined
/// text and, for each of its lines, the file (index into `files`) and line it came from.
struct Joined {
    text: String,
    origin: Vec<(usize, usize)>,
    files: Vec<String>,
    /// Include patterns that matched no file: (file, line, pattern).
    unmatched: Vec<(usize, usize, String)>,
}

/// The pattern of an `include PATTERN` line (keepalived reads these wherever they are, before
/// it parses), if `line` is one.
fn include_of(line: &str) -> Option<&str> {
    let code = line.split(['#', '!']).next().unwrap_or("");
    let mut w = code.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("include"), Some(p), None) => Some(p),
        _ => None,
    }
}

/// `*` (any run) and `?` (any one character) matching, as glob(3) does within a file name; a
/// leading `.` is matched only by a leading `.` (glob's hidden files).
fn wildcard(pat: &[char], name: &[char]) -> bool {
    if name.first() == Some(&'.') && pat.first() != Some(&'.') {
        return false;
    }
    // The usual two-pointer match: on a mismatch, the last `*` takes one more character
    // (at most pattern x name steps, however many stars).
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    (p, n) = (sp + 1, sn + 1);
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == '*')
}

/// The files an include pattern names, sorted (glob's order): relative to the directory of
/// the including file; wildcards (`*`, `?`) in the file name only.
fn include_files(from: &std::path::Path, pattern: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let p = std::path::Path::new(pattern);
    let p = if p.is_absolute() { p.to_path_buf() } else { from.parent().unwrap_or(std::path::Path::new(".")).join(p) };
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = p.parent().unwrap_or(std::path::Path::new("/"));
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!("include {pattern}: wildcards are supported in the file name only"));
    }
    if !name.contains(['*', '?']) {
        return Ok(if p.exists() { vec![p] } else { Vec::new() });
    }
    let pat: Vec<char> = name.chars().collect();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("include {pattern}: {}: {e}", dir.display()))?;
    let mut out: Vec<std::path::PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| wildcard(&pat, &e.file_name().to_string_lossy().chars().collect::<Vec<_>>()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn join(path: &std::path::Path, depth: usize, j: &mut Joined) -> Result<(), ConfigError> {
    let fi = j.files.len();
    j.files.push(path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: None,
        column: None,
        message: e.to_string(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    for (i, line) in text.lines().enumerate() {
        let at =
            |m: String| ConfigError { file: path.display().to_string(), line: Some(i + 1), column: None, message: m };
        if let Some(pattern) = include_of(line) {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(at(format!(
                    "include {pattern}: includes nest more than {MAX_INCLUDE_DEPTH} deep (a loop?)"
                )));
            }
            let files = include_files(path, pattern).map_err(at)?;
            if files.is_empty() {
                j.unmatched.push((fi, i + 1, pattern.to_string()));
            }
            for f in files {
                join(&f, depth + 1, j)?;
            }
            continue;
        }
        j.text.push_str(line);
        j.text.push('\n');
        j.origin.push((fi, i + 1));
    }
    Ok(())
}

impl Joined {
    /// "line N" as the file and line it came from: unchanged for the main file, "FILE line N"
    /// for an included one.
    fn place(&self, n: usize) -> String {
        match self.origin.get(n.wrapping_sub(1)) {
            Some(&(0, l)) => format!("line {l}"),
            Some(&(f, l)) => format!("{} line {l}", self.files[f]),
            None => format!("line {n}"),
        }
    }
    /// Every "line N" of a message, placed ([`Joined::place`]).
    fn relabel(&self, msg: &str) -> String {
        let mut out = String::with_capacity(msg.len());
        let mut rest = msg;
        while let Some(k) = rest.find("line ") {
            out.push_str(&rest[..k]);
            let after = &rest[k + 5..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            // A word of its own ("online 5" is not a line number).
            let word = !rest[..k].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            match after[..digits].parse::<usize>() {
                Ok(n) if word => out.push_str(&self.place(n)),
                _ => {
                    out.push_str("line ");
                    out.push_str(&after[..digits]);
                }
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }
}

/// [`import`] of the keepalived.conf at `path`, with the files its `include` lines name
/// (keepalived's `include /etc/keepalived/conf.d/*.conf`) read in their place. Errors name
/// the file and line they are in; warnings from an included file name it ("FILE line N").
pub(super) fn import_file(path: &std::path::Path, marks: &MarkMap) -> Result<Import, ConfigError> {
    let mut j = Joined { text: String::new(), origin: Vec::new(), files: Vec::new(), unmatched: Vec::new() };
    join(path, 0, &mut j)?;
    match import(&j.text, marks) {
        Ok(mut imp) => {
            imp.warnings = imp.warnings.iter().map(|w| j.relabel(w)).collect();
            for (f, l, p) in &j.unmatched {
                let at = if *f == 0 { format!("line {l}") } else { format!("{} line {l}", j.files[*f]) };
                imp.warnings.insert(0, format!("{at}: include {p} names no file, nothing included"));
            }
            Ok(imp)
        }
        Err(mut e) => {
            if let Some(&(f, l)) = e.line.and_then(|n| j.origin.get(n.wrapping_sub(1))) {
                e.file = j.files[f].clone();
                e.line = Some(l);
            } else {
                e.file = j.files[0].clone();
            }
            e.message = j.relabel(&e.message);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabel_places_line_numbers_only() {
        let j = Joined {
            text: String::new(),
            origin: vec![(0, 1), (1, 7), (0, 2)],
            files: vec!["main.conf".into(), "conf.d/a.conf".into()],
            unmatched: Vec::new(),
        };
        assert_eq!(j.relabel("line 2: x (see line 3)"), "conf.d/a.conf line 7: x (see line 2)");
        assert_eq!(j.relabel("online 2, inline 3, line x, line"), "online 2, inline 3, line x, line");
        assert_eq!(j.relabel("line 99: beyond"), "line 99: beyond");
    }

    #[test]
    fn script_words_split_as_keepalived_splits_them() {
        let w = |s: &str| split_words(s);
        assert_eq!(w("/a  b\t'c  d' \"e \\\" f\" g\\ h ''").unwrap(), ["/a", "b", "c  d", "e \" f", "g h", ""]);
        assert_eq!(w("a'b'\"c\"d").unwrap(), ["abcd"], "quotes join with the word around them");
        assert_eq!(w("  ").unwrap(), Vec::<String>::new());
        assert!(w("/a 'b").is_err() && w("/a \"b").is_err() && w("/a \"b\\").is_err());
    }

    #[test]
    fn wildcards_as_glob_in_a_file_name() {
        let m = |p: &str, n: &str| wildcard(&p.chars().collect::<Vec<_>>(), &n.chars().collect::<Vec<_>>());
        assert!(m("*.conf", "a.conf") && m("?.conf", "a.conf") && m("a*b*c", "aXbYc") && m("*", "x"));
        assert!(!m("*.conf", "a.conf.bak") && !m("*.conf", ".a.conf") && !m("?.conf", "ab.conf"));
        assert!(m(".*.conf", ".a.conf") && m("a**", "a") && !m("a?", "a"));
        // Many stars against a long name: quick, not exponential.
        assert!(!m(&"*a".repeat(30), &"a".repeat(200).replace("aa", "ab")));
    }
}
