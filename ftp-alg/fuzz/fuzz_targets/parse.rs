//! Every parser on arbitrary bytes: no panic, and what parses re-parses consistently.
#![no_main]

use ferrovs_ftp_alg::parse::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = classify_command(data);
    let _ = reply_code(data);
    let _ = split_command(data);
    if let Some(a) = parse_port(data) {
        assert_ne!(a.port(), 0);
        assert_eq!(classify_command(data), Command::Port);
    }
    if let Some(a) = parse_eprt(data) {
        assert_ne!(a.port(), 0);
        assert_eq!(classify_command(data), Command::Eprt);
        // Full NAT's rewrite: the argument's range, replaced by a formatted argument with the
        // same delimiter, parses back to the formatted address.
        let range = command_arg_range(data);
        assert!(range.start <= range.end && range.end <= data.len());
        let d = data[range.start];
        let mut buf = [0u8; 64];
        let n = format_eprt_arg(d, a, &mut buf);
        let line = [&data[..range.start], &buf[..n], &data[range.end..]].concat();
        assert_eq!(parse_eprt(&line), Some(a));
    }
    {
        let r = command_arg_range(data);
        assert!(r.start <= r.end && r.end <= data.len());
    }
    if let Some((addr, range)) = parse_227(data) {
        // The range is in bounds and formatting the address gives text that parses back.
        let text = &data[range];
        let mut buf = [0u8; MAX_227_ADDR_LEN];
        let n = format_227_addr(*addr.ip(), addr.port(), &mut buf);
        assert!(n > 0 && text.len() <= MAX_227_ADDR_LEN);
        let mut line = b"227 (".to_vec();
        line.extend_from_slice(&buf[..n]);
        line.push(b')');
        assert_eq!(parse_227(&line).map(|x| x.0), Some(addr));
    }
    if let Some(p) = parse_229(data) {
        assert_ne!(p, 0);
    }
});
