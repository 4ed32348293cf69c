//! Importers for existing LVS configurations: Red Hat Piranha `lvs.cf` and
//! `keepalived.conf`. `ipvsadm-save` output is ipvsadm command lines: the
//! engine imports it with the parser `ferrovsadm` uses
//! (`ferrovs_engine::ctl::ipvsadm::import_save`), into the same [`Import`].
//!
//! Each returns the services it understood plus warnings (with line
//! numbers) for everything it did not import, so that nothing is dropped
//! silently. Render the result with [`Import::to_toml`] and add the
//! `[engine]`, `[[interface]]` and `[[route]]` sections by hand.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::ConfigError;
use crate::model::*;

mod keepalived;
mod lvs_cf;
mod marks;
mod tokens;

pub use marks::marks_from_iptables;

/// Services imported from another tool's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    pub services: Vec<Service>,
    /// Everything not imported, or imported with a guess, as
    /// `"line N: ..."` messages.
    pub warnings: Vec<String>,
}

/// (Firewall mark, IPv6?) -> (VIP, ports) of the traffic the mark selects in that family (IPVS
/// keys a mark service by family and mark). The iptables/nftables rules that set the mark are
/// not part of the LVS configuration: the caller supplies them, e.g. from
/// [`marks_from_iptables`]. No ports: every port.
pub type MarkMap = HashMap<(u32, bool), (IpAddr, Vec<PortRange>)>;

impl Import {
    /// The services as `[[service]]` TOML blocks, preceded by the warnings
    /// as comments. Prepend `[engine]` and `[[interface]]` sections to get
    /// a complete config.
    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        for w in &self.warnings {
            o.push_str("# import warning: ");
            o.push_str(&w.replace('\n', " "));
            o.push('\n');
        }
        for s in &self.services {
            if !o.is_empty() {
                o.push('\n');
            }
            o.push_str(&crate::render::service(s));
        }
        o
    }
}

/// Import a Red Hat Piranha `lvs.cf`.
pub fn from_lvs_cf(text: &str) -> Result<Import, ConfigError> {
    lvs_cf::import(text, &MarkMap::new())
}

/// [`from_lvs_cf`] with a firewall mark mapping (a virtual's `fwmark` takes the ports its
/// rules select).
pub fn from_lvs_cf_with_marks(text: &str, marks: &MarkMap) -> Result<Import, ConfigError> {
    lvs_cf::import(text, marks)
}

/// Import the `virtual_server` blocks of a `keepalived.conf`.
pub fn from_keepalived(text: &str) -> Result<Import, ConfigError> {
    keepalived::import(text, &MarkMap::new())
}

/// [`from_keepalived`] with a firewall mark -> (vip, ports) mapping for
/// `virtual_server fwmark N` blocks.
pub fn from_keepalived_with_marks(text: &str, marks: &MarkMap) -> Result<Import, ConfigError> {
    keepalived::import(text, marks)
}

/// Import the keepalived.conf at `path` with the files its `include` lines name (errors name
/// the file and line), and a firewall mark mapping as [`from_keepalived_with_marks`].
pub fn from_keepalived_file(path: &std::path::Path, marks: &MarkMap) -> Result<Import, ConfigError> {
    keepalived::import_file(path, marks)
}

// ---------------------------------------------------------------------------
// Shared helpers.

pub(crate) fn err(origin: &str, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError { file: origin.to_string(), line: Some(line), column: None, message: message.into() }
}

pub(crate) fn service_name(proto: Protocol, vip: IpAddr, port: u16) -> String {
    format!("{}-{}-{}", crate::validate::proto_name(proto), vip, port)
}

/// The name an imported firewall-mark service gets: `fwmMARK`, `fwmMARK-ipv6` for an IPv6
/// one (IPVS keys mark services by family and mark: both may exist).
pub fn fwmark_name(mark: u32, v6: bool) -> String {
    if v6 {
        format!("fwm{mark}-ipv6")
    } else {
        format!("fwm{mark}")
    }
}

pub(crate) fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }
}

pub(crate) fn blank_service(name: String, vip: IpAddr, protocol: Protocol, ports: Vec<PortRange>) -> Service {
    Service {
        name,
        vip,
        protocol,
        ports,
        scheduler: ferrovs_sched::DEFAULT.into(),
        forward: Forward::Nat,
        persistence: None,
        ftp: None,
        fwmark: None,
        real_servers: Vec::new(),
        health_checks: Vec::new(),
        syn_proxy: Default::default(),
        one_packet: false,
        sched_flags: Default::default(),
        allow_from: Vec::new(),
        source_conn_rate: 0,
        source_conn_burst: 0,
        deny_from: Vec::new(),
        local_addresses: Vec::new(),
        sorry_server: None,
        quorum: 1,
        hysteresis: 0,
        notify: None,
    }
}

/// The error for `s` if an earlier service has its VIP, protocol and one of its ports (the
/// validator refuses such overlaps). Firewall-mark services without a mapping (VIP 0.0.0.0 or
/// ::, every port, to be set by hand) are not compared.
pub(crate) fn overlap(services: &[Service], s: &Service, origin: &str, line: usize) -> Result<(), ConfigError> {
    if s.vip.is_unspecified() {
        return Ok(());
    }
    for o in services.iter().filter(|o| o.vip == s.vip && o.protocol == s.protocol) {
        if let Some(p) = crate::validate::ports_overlap(&o.ports, &s.ports) {
            return Err(err(
                origin,
                line,
                format!(
                    "service {:?} overlaps service {:?} on {} {} port {p}",
                    s.name,
                    o.name,
                    crate::validate::proto_name(s.protocol),
                    s.vip
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn max_prefix(vip: IpAddr) -> u8 {
    if vip.is_ipv4() {
        32
    } else {
        128
    }
}

/// Persistence netmask: a dotted IPv4 mask or a prefix length.
pub(crate) fn netmask(s: &str, vip: IpAddr) -> Result<u8, String> {
    if let Ok(p) = s.parse::<u8>() {
        if p <= max_prefix(vip) {
            return Ok(p);
        }
        return Err(format!("netmask /{p} out of range for {vip}"));
    }
    match s.parse::<std::net::Ipv4Addr>() {
        Ok(m) if vip.is_ipv4() => crate::raw::mask_to_prefix(m).ok_or_else(|| format!("netmask {s} is not contiguous")),
        _ => Err(format!("invalid netmask {s:?}")),
    }
}

/// Well-known port names that `ipvsadm-save` without `-n` prints.
pub fn port_number(s: &str) -> Option<u16> {
    if let Ok(p) = s.parse::<u16>() {
        return Some(p);
    }
    Some(match s {
        "ftp-data" => 20,
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "http" | "www" => 80,
        "pop3" => 110,
        "imap" | "imap2" => 143,
        "https" => 443,
        "smtps" | "submissions" => 465,
        "submission" => 587,
        "ftps" => 990,
        "imaps" => 993,
        "pop3s" => 995,
        "mysql" => 3306,
        "http-alt" | "webcache" => 8080,
        _ => return None,
    })
}

/// Enable the FTP helper when a TCP service covers port 21, as the kernel's
/// ip_vs_ftp module does (its default `ports=21`).
pub(crate) fn maybe_ftp(s: &mut Service, line: usize, warnings: &mut Vec<String>, why: &str) {
    if s.protocol == Protocol::Tcp && s.ftp.is_none() && s.has_port(21) && !s.ports.is_empty() {
        s.ftp = Some(FtpOptions::default());
        warnings.push(format!("line {line}: service {:?}: {why}: enabled the FTP helper (ftp = true)", s.name));
    }
}
