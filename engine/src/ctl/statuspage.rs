//! The status page served at `/` on `[engine] metrics_listen` (beside
//! `/metrics`), in the spirit of HAProxy's stats page: services, real
//! servers, weights, health, connections, rates, drops, flow-table fill and
//! FTP gateway counters. One self-contained HTML document: inline CSS, no
//! script, no external asset, refreshed by a meta refresh every
//! [`REFRESH_SECONDS`], readable on a phone (viewport meta, tables scroll
//! sideways in their own box, smaller type on narrow screens). Read-only:
//! it has no form and no link that changes anything. Every name that comes
//! from the configuration or the network is HTML-escaped.

use crate::ctl::overview::{self, human, Overview};
use std::fmt::Write as _;

pub const REFRESH_SECONDS: u32 = 2;

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mut:#667;--line:#d8dce2;--svc:#eef3fb;--up:#1a7f37;--down:#cf222e;--warn:#9a6700}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--mut:#8b949e;--line:#30363d;--svc:#161b22;--up:#3fb950;--down:#f85149;--warn:#d29922}}\
*{box-sizing:border-box}body{margin:0;padding:12px;font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg)}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}.mut{color:var(--mut)}\
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}.card{border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:120px}\
.card b{display:block;font-size:18px}.bar{height:6px;background:var(--line);border-radius:3px;overflow:hidden;margin-top:4px}\
.bar i{display:block;height:100%;background:var(--up)}.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid var(--line);border-radius:6px}\
table{border-collapse:collapse;width:100%;white-space:nowrap}th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right}\
th{font-weight:600;background:var(--svc);position:sticky;top:0}th:first-child,td:first-child,th.l,td.l{text-align:left}\
tr.svc td{background:var(--svc);font-weight:600}tr.rs td:first-child{padding-left:22px}\
.up{color:var(--up);font-weight:600}.down{color:var(--down);font-weight:600}.quiesced{color:var(--warn)}\
@media (max-width:600px){body{padding:6px;font-size:13px}th,td{padding:3px 5px}.card{min-width:44%}}";

fn health_cell(h: &str) -> String {
    let class = if h == "up" || h.ends_with(" up") && !h.starts_with("0/") {
        "up"
    } else if h == "down" || h.starts_with("0/") {
        "down"
    } else {
        "mut"
    };
    format!("<td class=\"{class}\">{}</td>", esc(h))
}

/// The page.
pub fn render(ov: &Overview) -> String {
    let mut s = String::with_capacity(16 << 10);
    let fill = if ov.flow_capacity > 0 { ov.flows_active as f64 * 100.0 / ov.flow_capacity as f64 } else { 0.0 };
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
<title>ferrovs status</title><style>{CSS}</style></head><body>\n\
<h1>ferrovs status</h1><div class=\"mut\">version {} &middot; up {} &middot; {} workers{} &middot; refreshes every {REFRESH_SECONDS} s &middot; <a href=\"/metrics\">metrics</a></div>\n",
        esc(&ov.version),
        overview::uptime(ov.uptime_s),
        ov.workers,
        ov.config.as_deref().map(|c| format!(" &middot; config {}", esc(c))).unwrap_or_default(),
    );
    let conns: u64 = ov.list.services.iter().map(|s| s.stats.conns).sum();
    let cps: u64 = ov.list.services.iter().map(|s| s.stats.cps).sum();
    let checked = ov.list.services.iter().flat_map(|s| &s.dests).filter(|d| d.health.is_some()).count();
    let down = ov.list.services.iter().flat_map(|s| &s.dests).filter(|d| d.health.as_deref() == Some("down")).count();
    let _ = writeln!(
        s,
        "<div class=\"cards\">\
<div class=\"card\" id=\"flows\">flow table<b>{} / {}</b><div class=\"bar\"><i style=\"width:{:.1}%\"></i></div>{fill:.1}% full</div>\
<div class=\"card\">services<b>{}</b>{} real servers</div>\
<div class=\"card\">connections<b>{}</b>{} /s</div>\
<div class=\"card\">packets<b>{}</b>rx, {} tx</div>\
<div class=\"card\">drops<b>{}</b>all reasons</div>\
<div class=\"card\">health<b class=\"{}\">{}</b>servers down of {checked} checked</div></div>",
        human(ov.flows_active),
        human(ov.flow_capacity),
        fill.min(100.0),
        ov.list.services.len(),
        ov.list.services.iter().map(|s| s.dests.len()).sum::<usize>(),
        human(conns),
        human(cps),
        human(ov.rx_packets),
        human(ov.tx_packets),
        human(ov.drops_total()),
        if down > 0 { "down" } else { "up" },
        down,
    );

    s.push_str(
        "<h2>Services and real servers</h2><div class=\"scroll\"><table id=\"services\"><thead><tr>\
<th>service / real server</th><th class=\"l\">forward / scheduler</th><th>weight</th><th>health</th>\
<th>active</th><th>inactive</th><th>conns</th><th>conn/s</th><th>pkt/s in</th><th>pkt/s out</th>\
<th>bytes/s in</th><th>bytes/s out</th><th>bytes in</th><th>bytes out</th></tr></thead><tbody>\n",
    );
    for r in overview::rows(ov, "name", false) {
        let (svc, dest) = find(ov, &r);
        let st = dest.map(|d| &d.stats).or(svc.map(|s| &s.stats)).cloned().unwrap_or_default();
        let weight = match r.weight {
            Some((w, c)) if w != c => format!("<span class=\"quiesced\">{w}</span> ({c})"),
            Some((w, _)) => w.to_string(),
            None => String::new(),
        };
        let title = match (svc, dest) {
            (Some(sv), None) => format!(
                "{} <span class=\"mut\">{} {}{}</span>",
                esc(&sv.name),
                esc(&sv.proto),
                esc(&crate::ctl::ipvsadm::addrport(sv.vip, sv.port)),
                if sv.ftp { " &middot; FTP gateway" } else { "" }
            ),
            _ => esc(&r.name),
        };
        let _ = writeln!(
            s,
            "<tr class=\"{}\"><td>{title}</td><td class=\"l\">{}</td><td>{weight}</td>{}\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.service { "svc" } else { "rs" },
            esc(&r.forward),
            health_cell(&r.health),
            human(r.active),
            human(r.inactive),
            human(st.conns),
            human(st.cps),
            human(st.inpps),
            human(st.outpps),
            human(st.inbps / 8),
            human(st.outbps / 8),
            human(st.inbytes),
            human(st.outbytes),
        );
    }
    s.push_str("</tbody></table></div>\n");

    if !ov.health.is_empty() {
        s.push_str(
            "<h2>Health checks</h2><div class=\"scroll\"><table id=\"health\"><thead><tr><th>service</th>\
<th class=\"l\">server</th><th>state</th><th>checks</th><th>failures</th><th class=\"l\">last error</th></tr></thead><tbody>\n",
        );
        for h in &ov.health {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"l\">{}</td>{}<td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                esc(&h.service),
                esc(&h.server),
                health_cell(if h.up { "up" } else { "down" }),
                h.checks,
                h.failures,
                esc(h.last_error.as_deref().unwrap_or("-")),
            );
        }
        s.push_str("</tbody></table></div>\n");
    }

    s.push_str(
        "<h2>Drops by reason</h2><div class=\"scroll\"><table id=\"drops\"><thead><tr><th>reason</th><th>packets</th></tr></thead><tbody>\n",
    );
    let nz: Vec<&(String, u64)> = ov.drops.iter().filter(|d| d.1 > 0).collect();
    if nz.is_empty() {
        s.push_str("<tr><td class=\"mut\">no drops</td><td>0</td></tr>\n");
    }
    for (k, v) in nz {
        let _ = writeln!(s, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    s.push_str("</tbody></table></div>\n");
    if !ov.refused.is_empty() {
        s.push_str(
            "<h2>New connections refused</h2><div class=\"scroll\"><table id=\"refused\"><thead><tr><th>service</th><th>reason</th><th>connections</th></tr></thead><tbody>\n",
        );
        for (svc, reason, n) in &ov.refused {
            let _ = writeln!(s, "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>", esc(svc), esc(reason));
        }
        s.push_str("</tbody></table></div>\n");
    }

    if !ov.ftp.is_empty() {
        // One row per counter, one column per FTP service: narrow enough for a phone.
        s.push_str("<h2>FTP gateway</h2><div class=\"scroll\"><table id=\"ftp\"><thead><tr><th>counter</th>");
        for f in &ov.ftp {
            let _ = write!(s, "<th>{}</th>", esc(&f.service));
        }
        s.push_str("</tr></thead><tbody>\n");
        for (i, (name, _)) in ov.ftp[0].counters.iter().enumerate() {
            let _ = write!(s, "<tr><td>{}</td>", esc(&name.replace('_', " ")));
            for f in &ov.ftp {
                let _ = write!(s, "<td>{}</td>", f.counters.get(i).map(|c| c.1).unwrap_or(0));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody></table></div>\n");
    }
    s.push_str("<p class=\"mut\">Read-only. Counters since start (or the last ferrovsadm -Z); rates are 2-second averages as ipvsadm --rate.</p></body></html>\n");
    s
}

type ServiceRef<'a> = Option<&'a crate::ctl::ipvsadm::ServiceView>;
type DestRef<'a> = Option<&'a crate::ctl::ipvsadm::DestView>;

/// The service (and real server) a row was made from.
fn find<'a>(ov: &'a Overview, r: &overview::Row) -> (ServiceRef<'a>, DestRef<'a>) {
    for sv in &ov.list.services {
        let name = format!("{} ({} {})", sv.name, sv.proto, crate::ctl::ipvsadm::addrport(sv.vip, sv.port));
        if r.service && r.name == name {
            return (Some(sv), None);
        }
    }
    for sv in &ov.list.services {
        for d in &sv.dests {
            if !r.service && crate::ctl::ipvsadm::addrport(d.addr, d.port) == r.name {
                return (Some(sv), Some(d));
            }
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_shows_everything_and_escapes_names() {
        let p = render(&crate::ctl::overview::tests::sample());
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.contains("name=\"viewport\""), "phone-readable");
        assert!(p.contains("http-equiv=\"refresh\""), "refreshes itself");
        assert!(p.contains("&lt;web&amp;&gt;"), "service name escaped");
        assert!(!p.contains("<web&>"));
        assert!(p.contains("connect: refused &lt;x&gt;"), "health error escaped");
        assert!(p.contains("10.0.2.2:21") && p.contains("10.0.2.3:21") && p.contains("10.0.2.4:21"));
        assert!(p.contains("<td class=\"down\">down</td>"));
        assert!(p.contains("<span class=\"quiesced\">0</span> (1)"), "quiesced weight");
        assert!(p.contains("<td>no_service</td><td>3</td>"));
        assert!(
            p.contains("<tr><td>&lt;web&amp;&gt;</td><td>source_denied</td><td>2</td></tr>"),
            "refusals per service"
        );
        assert!(!p.contains("no_flow"), "zero drop reasons are left out");
        assert!(
            p.contains("<th>counter</th><th>ftp</th>") && p.contains("<tr><td>control sessions</td><td>7</td></tr>")
        );
        assert!(p.contains("<tr><td>expectations refused</td><td>0</td></tr>"), "every counter is listed");
        assert!(p.contains("250 / 1000") && p.contains("25.0% full"));
        for bad in ["<script", "src=\"http", "href=\"http", "<form", "<link"] {
            assert!(!p.contains(bad), "self-contained and read-only: found {bad}");
        }
    }

    #[test]
    fn rows_follow_their_service() {
        let p = render(&crate::ctl::overview::tests::sample());
        let a = p.find("&lt;web&amp;&gt; <span").unwrap();
        let b = p.find("10.0.2.4:21").unwrap();
        let c = p.find("ftp <span").unwrap();
        let d = p.find("10.0.2.2:21").unwrap();
        assert!(a < b && b < c && c < d, "services by name, each followed by its servers");
    }

    #[test]
    fn escape() {
        assert_eq!(esc("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }
}
