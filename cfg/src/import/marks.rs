//! Firewall marks from the iptables rules that set them: `iptables-save` / `ip6tables-save`
//! output, or the `iptables -t mangle -A PREROUTING ... -j MARK --set-mark N` lines of a
//! script (the Red Hat LVS guide's FTP recipe marks port 21 and the passive range 10000:20000
//! of a VIP with one mark).
//!
//! ```text
//! *mangle
//! -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 21 -j MARK --set-xmark 0x15/0xffffffff
//! -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 10000:20000 -j MARK --set-xmark 0x15/0xffffffff
//! COMMIT
//! ```
//!
//! Each mark becomes, per address family, the one address and the ports its rules select: what
//! a `virtual_server fwmark N` / `-A -f N` / lvs.cf `fwmark = N` service needs to be a ferrovs
//! service. A rule this cannot represent (a negation, a source, a prefix, a partial mask, ...)
//! is left out with a warning; a value that is not one (a mark, a port, an address) is an error
//! naming the line.

use std::iter::Peekable;
use std::net::IpAddr;

use super::{err, MarkMap};
use crate::error::ConfigError;
use crate::model::PortRange;

const ORIGIN: &str = "iptables rules";

/// What one MARK rule selects.
struct Rule {
    mark: u32,
    dst: Option<IpAddr>,
    /// None: every port.
    ports: Option<Vec<PortRange>>,
}

/// The marks the MARK rules of the mangle table in `text` set, and warnings (`line N: ...`)
/// for the rules left out.
pub fn marks_from_iptables(text: &str) -> Result<(MarkMap, Vec<String>), ConfigError> {
    let mut marks = MarkMap::new();
    // Per (mark, family): the rule line that gave the address, and whether a rule selects every
    // port (then the ports of the others add nothing).
    let mut seen: std::collections::HashMap<(u32, bool), (usize, bool)> = std::collections::HashMap::new();
    let mut warnings = Vec::new();
    let mut table = String::from("filter");
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(':') || line == "COMMIT" {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        let words = split(line).map_err(|m| err(ORIGIN, n, m))?;
        let rule = match rule(&words, &table) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(Skip::Warn(m)) => {
                warnings.push(format!("line {n}: {m}: rule not imported"));
                continue;
            }
            Err(Skip::Bad(m)) => return Err(err(ORIGIN, n, m)),
        };
        let Some(dst) = rule.dst else {
            warnings.push(format!(
                "line {n}: mark {}: the rule selects every destination address; a ferrovs service has one: \
                 rule not imported",
                rule.mark
            ));
            continue;
        };
        let key = (rule.mark, dst.is_ipv6());
        match marks.get_mut(&key) {
            None => {
                seen.insert(key, (n, rule.ports.is_none()));
                marks.insert(key, (dst, rule.ports.unwrap_or_default()));
            }
            Some((vip, _)) if *vip != dst => {
                let first = seen.get(&key).map_or(0, |s| s.0);
                warnings.push(format!(
                    "line {n}: mark {} selects {dst} besides {vip} (line {first}); a ferrovs service has one \
                     address: rule not imported",
                    rule.mark
                ));
            }
            Some((_, ports)) => {
                let all = &mut seen.get_mut(&key).expect("seen with the mark").1;
                match rule.ports {
                    None => {
                        *all = true;
                        ports.clear();
                    }
                    Some(p) if !*all => *ports = merged(ports, &p),
                    Some(_) => {}
                }
            }
        }
    }
    Ok((marks, warnings))
}

enum Skip {
    /// Not representable: left out with this warning.
    Warn(String),
    /// Malformed: an error.
    Bad(String),
}

/// The MARK rule `words` (an `-A` line of iptables-save in `table`, or an `iptables ...`
/// command line) selects, or None if it is not one (another table, target or command).
fn rule(words: &[String], table: &str) -> Result<Option<Rule>, Skip> {
    let mut w = words.iter().map(String::as_str).peekable();
    let mut table = table.to_string();
    // A command line: `[/path/]iptables` or `ip6tables`, then `-t TABLE` anywhere.
    if let Some(first) = w.peek() {
        let prog = first.rsplit('/').next().unwrap_or(first);
        if prog.starts_with("iptables") || prog.starts_with("ip6tables") {
            w.next();
            table = "filter".into();
        } else if !first.starts_with('-') {
            return Err(Skip::Warn(format!("{first:?} is neither an iptables rule nor an iptables command")));
        }
    }
    let mut r = Parts { table, ..Parts::default() };
    // The first thing that makes the rule unusable, said only if it is a MARK rule.
    let mut skip: Option<Skip> = None;
    while let Some(o) = w.next() {
        if let Err(s) = r.option(o, &mut w) {
            skip.get_or_insert(s);
        }
    }
    // Only an appended (or inserted) rule of the mangle table jumping to MARK sets a mark
    // (a delete, a flush, a policy or another target does not).
    if !r.appends || r.table != "mangle" || r.target != Some("MARK") {
        return Ok(None);
    }
    if let Some(s) = skip {
        return Err(s);
    }
    let Some(mark) = r.mark else { return Err(Skip::Bad("-j MARK without --set-mark or --set-xmark".into())) };
    if !r.proto_ok {
        return Err(Skip::Warn(format!("mark {mark}: a protocol other than tcp or udp")));
    }
    Ok(Some(Rule { mark, dst: r.dst, ports: r.ports }))
}

/// What a rule's options said so far.
struct Parts<'a> {
    table: String,
    appends: bool,
    target: Option<&'a str>,
    mark: Option<u32>,
    dst: Option<IpAddr>,
    ports: Option<Vec<PortRange>>,
    proto_ok: bool,
}

impl Default for Parts<'_> {
    fn default() -> Self {
        Parts { table: String::new(), appends: false, target: None, mark: None, dst: None, ports: None, proto_ok: true }
    }
}

impl<'a> Parts<'a> {
    /// Option `o` with its value(s) from `w`.
    fn option(&mut self, o: &str, w: &mut Peekable<impl Iterator<Item = &'a str>>) -> Result<(), Skip> {
        let mut val = || w.next().ok_or_else(|| Skip::Bad(format!("{o} needs a value")));
        match o {
            "-t" | "--table" => self.table = val()?.to_string(),
            "-A" | "--append" | "-I" | "--insert" => {
                val()?;
                self.appends = true;
                // `-I CHAIN [RULENUM]`.
                if matches!(o, "-I" | "--insert") {
                    w.next_if(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                }
            }
            "-j" | "--jump" => self.target = Some(val()?),
            "-d" | "--destination" | "--dst" => self.dst = Some(address(val()?)?),
            "-p" | "--protocol" => self.proto_ok = matches!(val()?, "tcp" | "udp" | "6" | "17"),
            "--dport" | "--destination-port" => self.ports = Some(vec![port_range(val()?)?]),
            "--dports" | "--destination-ports" => {
                self.ports = Some(val()?.split(',').map(port_range).collect::<Result<_, _>>()?)
            }
            "--set-mark" | "--set-xmark" => self.mark = Some(mark_value(val()?)?),
            // A match module's name, a comment; interfaces (the balancer's own: the mark
            // selects what arrives on them).
            "-m" | "--match" | "--comment" | "-i" | "--in-interface" | "-o" | "--out-interface" => {
                val()?;
            }
            "!" => return Err(Skip::Warn("a negated match".into())),
            "-s" | "--source" | "--src" | "--sport" | "--source-port" | "--sports" => {
                return Err(Skip::Warn(format!("{o}: a source match (a ferrovs service takes every client)")))
            }
            "--and-mark" | "--or-mark" | "--xor-mark" => {
                return Err(Skip::Warn(format!("{o}: a mark computed from the packet's")))
            }
            o => return Err(Skip::Warn(format!("option {o} is not understood"))),
        }
        Ok(())
    }
}

/// Words of a rule line: iptables-save quotes a comment with spaces in double quotes (`\"`
/// inside).
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => cur.push(chars.next().ok_or("a line ends in a backslash")?),
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// `--set-mark` / `--set-xmark` `VALUE[/MASK]`, decimal or 0x hex; only a whole mask (none,
/// or 0xffffffff) sets the mark to the value.
fn mark_value(s: &str) -> Result<u32, Skip> {
    let num = |t: &str| {
        let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16),
            None => t.parse(),
        };
        r.map_err(|_| Skip::Bad(format!("invalid mark {s:?}")))
    };
    let (v, mask) = match s.split_once('/') {
        Some((v, m)) => (num(v)?, num(m)?),
        None => (num(s)?, u32::MAX),
    };
    if mask != u32::MAX {
        return Err(Skip::Warn(format!("mark {s}: a mask other than 0xffffffff keeps bits of the packet's mark")));
    }
    if v == 0 {
        return Err(Skip::Warn("mark 0 (no mark: no firewall-mark service has it)".into()));
    }
    Ok(v)
}

/// `-d ADDRESS[/32 or /128]`: one address (a service has one).
fn address(s: &str) -> Result<IpAddr, Skip> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().map_err(|_| Skip::Bad(format!("invalid address {s:?}")))?;
    let full = if ip.is_ipv4() { "32" } else { "128" };
    match len {
        None => Ok(ip),
        Some(l) if l == full || (ip.is_ipv4() && l == "255.255.255.255") => Ok(ip),
        Some(_) => Err(Skip::Warn(format!("destination {s} is a network; a ferrovs service has one address"))),
    }
}

/// `P` or `P:Q` (iptables' range; `P:` and `:Q` open-ended).
fn port_range(s: &str) -> Result<PortRange, Skip> {
    let bad = || Skip::Bad(format!("invalid port {s:?}"));
    let p = |t: &str, def: u16| if t.is_empty() { Ok(def) } else { t.parse::<u16>().map_err(|_| bad()) };
    let (lo, hi) = match s.split_once(':') {
        Some((a, b)) => (p(a, 0)?, p(b, 65535)?),
        None => {
            let v = p(s, 0)?;
            (v, v)
        }
    };
    if lo > hi || hi == 0 || (lo == 0 && s.split_once(':').is_none()) {
        return Err(bad());
    }
    Ok(PortRange { lo: lo.max(1), hi })
}

/// `a` and `b` as sorted ranges, overlapping and adjacent ones joined.
fn merged(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut all: Vec<PortRange> = a.iter().chain(b).copied().collect();
    all.sort_by_key(|r| (r.lo, r.hi));
    let mut out: Vec<PortRange> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(l) if u32::from(r.lo) <= u32::from(l.hi) + 1 => l.hi = l.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    #[test]
    fn the_red_hat_ftp_recipe() {
        // iptables-save output of the guide's two rules, and the same as script lines.
        let save = "# Generated by iptables-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n\
                    -A INPUT -d 10.0.0.100/32 -p tcp -j ACCEPT\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n\
                    -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 21 -j MARK --set-xmark 0x15/0xffffffff\n\
                    -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 10000:20000 -j MARK --set-xmark 0x15/0xffffffff\n\
                    COMMIT\n";
        let script = "/usr/sbin/iptables -t mangle -A PREROUTING -p tcp -d 10.0.0.100/32 --dport 21 -j MARK --set-mark 21\n\
                      /usr/sbin/iptables -t mangle -I PREROUTING 1 -p tcp -d 10.0.0.100/32 --dport 10000:20000 -j MARK --set-mark 21\n";
        for t in [save, script] {
            let (m, w) = marks_from_iptables(t).unwrap();
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(m.len(), 1);
            assert_eq!(m[&(21, false)], ("10.0.0.100".parse().unwrap(), vec![pr(21, 21), pr(10000, 20000)]));
        }
    }

    #[test]
    fn families_ports_and_what_is_left_out() {
        let t = "*mangle\n\
                 -A PREROUTING -d 10.0.0.1/32 -p tcp -m multiport --dports 443,80,8000:8080 -j MARK --set-mark 5\n\
                 -A PREROUTING -d 2001:db8::1/128 -p tcp -m comment --comment \"web v6\" -j MARK --set-xmark 0x5/0xffffffff\n\
                 -A PREROUTING -d 10.0.0.1/32 -p udp --dport 81 -j MARK --set-mark 5\n\
                 -A PREROUTING -d 10.0.0.2/32 -p tcp --dport 80 -j MARK --set-mark 5\n\
                 -A PREROUTING -d 10.0.0.0/24 -p tcp -j MARK --set-mark 6\n\
                 -A PREROUTING ! -d 10.0.0.3/32 -j MARK --set-mark 7\n\
                 -A PREROUTING -s 192.0.2.0/24 -d 10.0.0.4/32 -j MARK --set-mark 8\n\
                 -A PREROUTING -d 10.0.0.5/32 -j MARK --set-xmark 0x9/0xff\n\
                 -A PREROUTING -p tcp --dport 25 -j MARK --set-mark 10\n\
                 -A PREROUTING -d 10.0.0.6/32 -j CONNMARK --restore-mark\n\
                 -A PREROUTING -d 10.0.0.7/32 -p icmp -j MARK --set-mark 11\n\
                 -A PREROUTING -d 10.0.0.8/32 -m frob --frob 1 -j MARK --set-mark 12\n\
                 -A PREROUTING -d 10.0.0.9/32 -j MARK --set-mark 0\n\
                 COMMIT\n";
        let (m, w) = marks_from_iptables(t).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[&(5, false)], ("10.0.0.1".parse().unwrap(), vec![pr(80, 81), pr(443, 443), pr(8000, 8080)]));
        assert_eq!(m[&(5, true)], ("2001:db8::1".parse().unwrap(), vec![]), "no port: every port");
        for (line, part) in [
            (5, "selects 10.0.0.2 besides 10.0.0.1 (line 2)"),
            (6, "is a network"),
            (7, "negated"),
            (8, "source"),
            (9, "a mask other than"),
            (10, "every destination address"),
            (12, "other than tcp or udp"),
            (13, "--frob is not understood"),
            (14, "mark 0"),
        ] {
            assert!(
                w.iter().any(|x| x.starts_with(&format!("line {line}: ")) && x.contains(part)),
                "{line} {part}: {w:#?}"
            );
        }
        assert_eq!(w.len(), 9, "CONNMARK is not a MARK rule: {w:#?}");
        // A rule with every port makes the mark's other ports moot, before or after them.
        let (m, _) = marks_from_iptables(
            "*mangle\n-A P -d 10.0.0.1 -p tcp --dport 80 -j MARK --set-mark 1\n-A P -d 10.0.0.1 -j MARK --set-mark 1\n\
             -A P -d 10.0.0.1 -p tcp --dport 443 -j MARK --set-mark 1\n",
        )
        .unwrap();
        assert_eq!(m[&(1, false)].1, vec![]);
    }

    #[test]
    fn malformed_values_are_errors_naming_the_line() {
        for (t, line, part) in [
            ("*mangle\n-A P -d 10.0.0.1 -j MARK --set-mark x\n", 2, "invalid mark"),
            ("*mangle\n\n-A P -d 10.0.0.300 -j MARK --set-mark 1\n", 3, "invalid address"),
            ("*mangle\n-A P -d 10.0.0.1 -p tcp --dport 70000 -j MARK --set-mark 1\n", 2, "invalid port"),
            ("*mangle\n-A P -d 10.0.0.1 -p tcp --dport 90:80 -j MARK --set-mark 1\n", 2, "invalid port"),
            ("*mangle\n-A P -d 10.0.0.1 -p tcp --dports 80,,81 -j MARK --set-mark 1\n", 2, "invalid port"),
            ("*mangle\n-A P -d 10.0.0.1 -j MARK\n", 2, "without --set-mark"),
            ("*mangle\n-A P -d 10.0.0.1 -j MARK --set-mark\n", 2, "needs a value"),
            ("*mangle\n-A P -m comment --comment \"open -j MARK --set-mark 1\n", 2, "not closed"),
        ] {
            let e = marks_from_iptables(t).unwrap_err();
            assert_eq!(e.line, Some(line), "{t:?}: {e}");
            assert!(e.message.contains(part), "{t:?}: {e}");
        }
    }

    #[test]
    fn quoted_words() {
        assert_eq!(
            split(r#"-m comment --comment "a \"b\" c" -j X"#).unwrap(),
            ["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
        assert_eq!(split(r#"--comment "" -j X"#).unwrap(), ["--comment", "", "-j", "X"]);
    }

    proptest::proptest! {
        #[test]
        fn any_text_gives_marks_or_an_error(t in "[-a-z0-9 ./:,!\"*\\n]{0,200}") {
            let _ = marks_from_iptables(&t);
        }
    }
}
