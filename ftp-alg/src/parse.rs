//! Pure, allocation-free parsers for the FTP lines the gateway cares about.
//!
//! Every function takes one whole line (the trailing `\r\n` or `\n` may be present or not) and
//! never panics on any input. They are `pub` so the fuzz target and the engine's CLI can use them.
//!
//! | function          | accepts                                                        |
//! |-------------------|----------------------------------------------------------------|
//! | [`classify_command`] | the verb of a client command, case-insensitive              |
//! | [`parse_port`]    | `PORT h1,h2,h3,h4,p1,p2` (RFC 959)                             |
//! | [`parse_eprt`]    | `EPRT <d>1<d>a.b.c.d<d>port<d>` / `<d>2<d>v6<d>port<d>` (RFC 2428) |
//! | [`parse_227`]     | final `227` reply: first `d,d,d,d,d,d` after the code (RFC 1123 4.1.2.6) |
//! | [`parse_229`]     | final `229` reply: `(<d><d><d>port<d>)`, any printable delimiter |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

/// Longest text [`format_227_addr`] writes: `255,255,255,255,255,255`.
pub const MAX_227_ADDR_LEN: usize = 23;

/// The client commands the gateway reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `PORT h1,h2,h3,h4,p1,p2`
    Port,
    /// `EPRT |af|addr|port|`
    Eprt,
    /// `PASV`
    Pasv,
    /// `EPSV`, `EPSV 1`, `EPSV 2`
    Epsv,
    /// `EPSV ALL`
    EpsvAll,
    /// `AUTH TLS`, `AUTH SSL`, `AUTH TLS-C`, `AUTH TLS-P`
    AuthTls,
    /// Anything else (including junk and empty lines).
    Other,
}

/// Strips one trailing `\n` and then one trailing `\r`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a command line into its verb and its argument (leading spaces of the argument
/// removed, end of line removed).
pub fn split_command(line: &[u8]) -> (&[u8], &[u8]) {
    let line = trim_eol(line);
    match line.iter().position(|&b| b == b' ') {
        Some(i) => {
            let mut arg = &line[i + 1..];
            while let [b' ', rest @ ..] = arg {
                arg = rest;
            }
            (&line[..i], arg)
        }
        None => (line, &[]),
    }
}

fn trim_trailing_ws(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Classifies a client command line by its verb (case-insensitive).
pub fn classify_command(line: &[u8]) -> Command {
    let (verb, arg) = split_command(line);
    let arg = trim_trailing_ws(arg);
    if verb.eq_ignore_ascii_case(b"PORT") {
        Command::Port
    } else if verb.eq_ignore_ascii_case(b"EPRT") {
        Command::Eprt
    } else if verb.eq_ignore_ascii_case(b"PASV") {
        Command::Pasv
    } else if verb.eq_ignore_ascii_case(b"EPSV") {
        match arg {
            b"" | b"1" | b"2" => Command::Epsv,
            a if a.eq_ignore_ascii_case(b"ALL") => Command::EpsvAll,
            _ => Command::Other,
        }
    } else if verb.eq_ignore_ascii_case(b"AUTH") {
        let tls = [&b"TLS"[..], b"SSL", b"TLS-C", b"TLS-P"].iter().any(|m| arg.eq_ignore_ascii_case(m));
        if tls {
            Command::AuthTls
        } else {
            Command::Other
        }
    } else {
        Command::Other
    }
}

/// Reply code of a reply line and whether it is a final line (`ddd ` or exactly `ddd`), as
/// opposed to the first/continuation line of a multi-line reply (`ddd-`).
pub fn reply_code(line: &[u8]) -> Option<(u16, bool)> {
    let line = trim_eol(line);
    let code = match line {
        [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return None,
    };
    match line.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

/// Parses a decimal number of 1..=`max_digits` digits at the start of `s`.
/// Returns the value and the number of bytes consumed.
fn number(s: &[u8], max_digits: usize) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    let mut n = 0;
    while n < s.len() && s[n].is_ascii_digit() {
        if n == max_digits {
            return None;
        }
        v = v * 10 + u32::from(s[n] - b'0');
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// Parses `h1,h2,h3,h4,p1,p2` at the start of `s`; every number is 1..=3 digits and <= 255.
/// Returns the address and the length of the text.
fn six_tuple(s: &[u8]) -> Option<(SocketAddrV4, usize)> {
    let mut v = [0u8; 6];
    let mut pos = 0;
    for (i, slot) in v.iter_mut().enumerate() {
        if i > 0 {
            if s.get(pos) != Some(&b',') {
                return None;
            }
            pos += 1;
        }
        let (n, len) = number(&s[pos..], 3)?;
        *slot = u8::try_from(n).ok()?;
        pos += len;
    }
    let ip = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
    let port = u16::from_be_bytes([v[4], v[5]]);
    Some((SocketAddrV4::new(ip, port), pos))
}

/// The byte range of a command's argument inside `line`: after the verb and its spaces, up to
/// the end of line and trailing spaces/tabs. Empty (at the end) when there is none.
pub fn command_arg_range(line: &[u8]) -> Range<usize> {
    let body = trim_trailing_ws(trim_eol(line));
    match body.iter().position(|&b| b == b' ') {
        Some(i) => {
            let mut start = i + 1;
            while body.get(start) == Some(&b' ') {
                start += 1;
            }
            start.min(body.len())..body.len()
        }
        None => body.len()..body.len(),
    }
}

/// Writes an `EPRT` argument `<d><af><d><addr><d><port><d>` for `a` with delimiter `d` into
/// `out` (at least 64 bytes); returns its length.
pub fn format_eprt_arg(d: u8, a: SocketAddr, out: &mut [u8]) -> usize {
    use std::io::Write;
    let total = out.len();
    let mut w = &mut out[..];
    let af = if a.is_ipv4() { 1 } else { 2 };
    let d = d as char;
    let _ = write!(w, "{d}{af}{d}{}{d}{}{d}", a.ip(), a.port());
    total - w.len()
}

/// Parses `PORT h1,h2,h3,h4,p1,p2`. Port 0 and numbers above 255 are rejected; trailing spaces
/// are tolerated, any other trailing text is not.
pub fn parse_port(line: &[u8]) -> Option<SocketAddrV4> {
    let (verb, arg) = split_command(line);
    if !verb.eq_ignore_ascii_case(b"PORT") {
        return None;
    }
    let arg = trim_trailing_ws(arg);
    let (addr, len) = six_tuple(arg)?;
    (len == arg.len() && addr.port() != 0).then_some(addr)
}

/// Parses `EPRT <d><af><d><addr><d><port><d>` (RFC 2428). The delimiter is any printable
/// ASCII character except digits; `af` 1 requires an IPv4 address, 2 an IPv6 address.
pub fn parse_eprt(line: &[u8]) -> Option<SocketAddr> {
    let (verb, arg) = split_command(line);
    if !verb.eq_ignore_ascii_case(b"EPRT") {
        return None;
    }
    let arg = trim_trailing_ws(arg);
    let (&d, rest) = arg.split_first()?;
    if !(33..=126).contains(&d) || d.is_ascii_digit() {
        return None;
    }
    let mut fields = rest.split(|&b| b == d);
    let af = fields.next()?;
    let addr = std::str::from_utf8(fields.next()?).ok()?;
    let port = fields.next()?;
    // After the closing delimiter nothing may follow: the split yields exactly one empty tail.
    if fields.next() != Some(&[][..]) || fields.next().is_some() {
        return None;
    }
    let (p, plen) = number(port, 5)?;
    if plen != port.len() || p == 0 || p > 65535 {
        return None;
    }
    let ip: IpAddr = match af {
        b"1" => IpAddr::V4(addr.parse::<Ipv4Addr>().ok()?),
        b"2" => IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, p as u16))
}

/// Parses a final `227` reply. Following RFC 1123 the text after the code is scanned for the
/// first digit sequence that forms `d,d,d,d,d,d` (with or without parentheses). Returns the
/// address and the byte range of the `h1,...,p2` text inside `line`, which is what the gateway
/// replaces. `227 Logout.` (pure-ftpd) and tuples with numbers above 255 give `None`.
pub fn parse_227(line: &[u8]) -> Option<(SocketAddrV4, Range<usize>)> {
    if reply_code(line)? != (227, true) {
        return None;
    }
    let body = trim_eol(line);
    let mut i = 3;
    while i < body.len() {
        if body[i].is_ascii_digit() && !body[i - 1].is_ascii_digit() {
            if let Some((addr, len)) = six_tuple(&body[i..]) {
                // Do not accept a prefix of a longer digit run ("1,2,3,4,5,6789").
                if !body.get(i + len).is_some_and(u8::is_ascii_digit) && addr.port() != 0 {
                    return Some((addr, i..i + len));
                }
            }
        }
        i += 1;
    }
    None
}

/// Parses a final `229` reply: `229 text (<d><d><d>port<d>)`. The three leading delimiters and
/// the closing one must be the same printable, non-digit character.
pub fn parse_229(line: &[u8]) -> Option<u16> {
    parse_229_field(line).map(|(p, _)| p)
}

/// [`parse_229`] with the byte range of the port's digits inside `line` (what the gateway
/// replaces when it moves a clashing expectation to another VIP port).
pub fn parse_229_field(line: &[u8]) -> Option<(u16, Range<usize>)> {
    if reply_code(line)? != (229, true) {
        return None;
    }
    let body = trim_eol(line);
    let open = body.iter().position(|&b| b == b'(')?;
    let s = &body[open + 1..];
    let d = *s.first()?;
    if !(33..=126).contains(&d) || d.is_ascii_digit() || s.get(1) != Some(&d) || s.get(2) != Some(&d) {
        return None;
    }
    let (p, len) = number(&s[3..], 5)?;
    if s.get(3 + len) != Some(&d) || s.get(4 + len) != Some(&b')') || p == 0 || p > 65535 {
        return None;
    }
    let start = open + 1 + 3;
    Some((p as u16, start..start + len))
}

/// Writes the decimal text of `port` into `out` (at least 5 bytes) and returns its length.
pub fn format_port(port: u16, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 5];
    let mut v = port;
    let mut n = 0;
    loop {
        tmp[4 - n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
        if v == 0 {
            break;
        }
    }
    if out.len() < n {
        return 0;
    }
    out[..n].copy_from_slice(&tmp[5 - n..]);
    n
}

/// Writes `h1,h2,h3,h4,p1,p2` for `ip:port` into `out` and returns its length, or returns 0 and
/// writes nothing if `out` is shorter than the text (it never is with
/// [`MAX_227_ADDR_LEN`] bytes).
pub fn format_227_addr(ip: Ipv4Addr, port: u16, out: &mut [u8]) -> usize {
    let [p1, p2] = port.to_be_bytes();
    let o = ip.octets();
    let nums = [o[0], o[1], o[2], o[3], p1, p2];
    let need: usize = nums.iter().map(|&n| digits(n)).sum::<usize>() + 5;
    if out.len() < need {
        return 0;
    }
    let mut pos = 0;
    for (i, &n) in nums.iter().enumerate() {
        if i > 0 {
            out[pos] = b',';
            pos += 1;
        }
        let d = digits(n);
        let mut v = n;
        for k in (0..d).rev() {
            out[pos + k] = b'0' + v % 10;
            v /= 10;
        }
        pos += d;
    }
    pos
}

fn digits(n: u8) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn port_table() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"PORT 10,0,0,1,4,1\r\n", Some("10.0.0.1:1025")),
            (b"port 192,168,1,2,255,255\n", Some("192.168.1.2:65535")),
            (b"Port 1,2,3,4,0,21", Some("1.2.3.4:21")),
            (b"PORT   1,2,3,4,0,21  \r\n", Some("1.2.3.4:21")),
            (b"PORT 256,0,0,1,4,1\r\n", None),
            (b"PORT 10,0,0,1,4,256\r\n", None),
            (b"PORT 10,0,0,1,4,1000\r\n", None),
            (b"PORT 0010,0,0,1,4,1\r\n", None),
            (b"PORT 10,0,0,1,4\r\n", None),
            (b"PORT 10,0,0,1,4,1,7\r\n", None),
            (b"PORT 10,0,0,1,0,0\r\n", None),
            (b"PORT 10,0,0,1,4,1x\r\n", None),
            (b"PORT ,0,0,1,4,1\r\n", None),
            (b"PORT\r\n", None),
            (b"PORTS 10,0,0,1,4,1\r\n", None),
            (b"EPRT 10,0,0,1,4,1\r\n", None),
            (b"", None),
            (b"\xff\xfe PORT", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_port(line), want.map(v4), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn eprt_table() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"EPRT |1|132.235.1.2|6275|\r\n", Some("132.235.1.2:6275")),
            (b"eprt |2|1080::8:800:200C:417A|5282|\r\n", Some("[1080::8:800:200c:417a]:5282")),
            (b"EPRT !1!10.0.0.1!21!", Some("10.0.0.1:21")),
            (b"EPRT |2|::1|65535|", Some("[::1]:65535")),
            (b"EPRT |1|::1|5282|", None),
            (b"EPRT |2|10.0.0.1|5282|", None),
            (b"EPRT |3|10.0.0.1|5282|", None),
            (b"EPRT |1|10.0.0.1|65536|", None),
            (b"EPRT |1|10.0.0.1|0|", None),
            (b"EPRT |1|10.0.0.1|21", None),
            (b"EPRT |1|10.0.0.1|21|x", None),
            (b"EPRT |1|10.0.0.1|21||", None),
            (b"EPRT |1|10.0.0.256|21|", None),
            (b"EPRT 1110.0.0.11211", None),
            (b"EPRT |1|10.0.0.1!21|", None),
            (b"EPRT", None),
            (b"EPRT |", None),
        ];
        for (line, want) in cases {
            let want = want.map(|s| s.parse::<SocketAddr>().unwrap());
            assert_eq!(parse_eprt(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn reply_227_table() {
        type Case<'a> = (&'a [u8], Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (b"227 Entering Passive Mode (10,0,2,2,4,1)\r\n", Some(("10.0.2.2:1025", "10,0,2,2,4,1"))),
            (b"227 Entering Passive Mode 10,0,2,2,4,1\r\n", Some(("10.0.2.2:1025", "10,0,2,2,4,1"))),
            (b"227 =192,168,100,200,195,80\n", Some(("192.168.100.200:50000", "192,168,100,200,195,80"))),
            (b"227 Entering Passive Mode (10,0,2,2,4,1).", Some(("10.0.2.2:1025", "10,0,2,2,4,1"))),
            (b"227 1 thing (10,0,2,2,4,1)\r\n", Some(("10.0.2.2:1025", "10,0,2,2,4,1"))),
            (b"227 Logout.\r\n", None),
            (b"227-Entering Passive Mode (10,0,2,2,4,1)\r\n", None),
            (b"227 Entering Passive Mode (10,0,2,2,4,256)\r\n", None),
            (b"227 Entering Passive Mode (10,0,2,2,4)\r\n", None),
            (b"227 Entering Passive Mode (10, 0, 2, 2, 4, 1)\r\n", None),
            (b"226 Entering Passive Mode (10,0,2,2,4,1)\r\n", None),
            (b"227 (10,0,2,2,0,0)\r\n", None),
            (b"227", None),
            (b"22", None),
            (b"", None),
        ];
        for (line, want) in cases {
            let got = parse_227(line).map(|(a, r)| (a, &line[r]));
            let want = want.map(|(a, t)| (v4(a), t.as_bytes()));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn reply_229_table() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"229 Entering Extended Passive Mode (|||6446|)\r\n", Some(6446)),
            (b"229 Entering Extended Passive Mode (!!!6446!)\r\n", Some(6446)),
            (b"229 EPSV ok (###65535#)", Some(65535)),
            (b"229 (|||1|)\n", Some(1)),
            (b"229 Entering Extended Passive Mode (|||6446!)\r\n", None),
            (b"229 Entering Extended Passive Mode (||6446|)\r\n", None),
            (b"229 Entering Extended Passive Mode (|||65536|)\r\n", None),
            (b"229 Entering Extended Passive Mode (|||0|)\r\n", None),
            (b"229 Entering Extended Passive Mode (|||6446|\r\n", None),
            (b"229 Entering Extended Passive Mode (11164461)\r\n", None),
            (b"229-Entering Extended Passive Mode (|||6446|)\r\n", None),
            (b"229 Entering Extended Passive Mode\r\n", None),
            (b"229 (", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_229(line), *want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn classify_table() {
        use Command::*;
        let cases: &[(&[u8], Command)] = &[
            (b"PORT 1,2,3,4,5,6\r\n", Port),
            (b"port 1,2,3,4,5,6\r\n", Port),
            (b"EPRT |1|1.2.3.4|5|\r\n", Eprt),
            (b"PASV\r\n", Pasv),
            (b"pasv\n", Pasv),
            (b"EPSV\r\n", Epsv),
            (b"EPSV 1\r\n", Epsv),
            (b"epsv 2\r\n", Epsv),
            (b"EPSV ALL\r\n", EpsvAll),
            (b"epsv all\r\n", EpsvAll),
            (b"EPSV 3\r\n", Other),
            (b"AUTH TLS\r\n", AuthTls),
            (b"auth ssl\r\n", AuthTls),
            (b"AUTH tls-c\r\n", AuthTls),
            (b"AUTH GSSAPI\r\n", Other),
            (b"PASS hunter2\r\n", Other),
            (b"PASVX\r\n", Other),
            (b"\r\n", Other),
            (b"", Other),
            (b"\x00\xff", Other),
        ];
        for (line, want) in cases {
            assert_eq!(classify_command(line), *want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn reply_code_table() {
        assert_eq!(reply_code(b"227 x\r\n"), Some((227, true)));
        assert_eq!(reply_code(b"227\r\n"), Some((227, true)));
        assert_eq!(reply_code(b"227-x\r\n"), Some((227, false)));
        assert_eq!(reply_code(b"227x\r\n"), None);
        assert_eq!(reply_code(b" 227 x"), None);
        assert_eq!(reply_code(b"627 x"), None);
        assert_eq!(reply_code(b"22"), None);
    }

    #[test]
    fn format_roundtrip() {
        let mut buf = [0u8; MAX_227_ADDR_LEN];
        for (ip, port, text) in [
            (Ipv4Addr::new(10, 0, 0, 100), 1025, "10,0,0,100,4,1"),
            (Ipv4Addr::new(255, 255, 255, 255), 65535, "255,255,255,255,255,255"),
            (Ipv4Addr::new(0, 0, 0, 0), 0, "0,0,0,0,0,0"),
        ] {
            let n = format_227_addr(ip, port, &mut buf);
            assert_eq!(&buf[..n], text.as_bytes());
            let line = format!("227 ok ({text})");
            if port != 0 {
                assert_eq!(parse_227(line.as_bytes()).unwrap().0, SocketAddrV4::new(ip, port));
            }
        }
        assert_eq!(format_227_addr(Ipv4Addr::new(1, 2, 3, 4), 5, &mut [0u8; 10]), 0);
        assert_eq!(format_227_addr(Ipv4Addr::new(1, 2, 3, 4), 5, &mut [0u8; 11]), 11);
    }
}
