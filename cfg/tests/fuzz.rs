//! Random bytes and random mutations of valid inputs never panic.

use ferrovs_cfg::import::*;
use ferrovs_cfg::Config;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../examples/nat-ftp.toml");
const DR: &str = include_str!("../examples/dr-ftp.toml");
const LVS: &str = include_str!("data/redhat-ftp-lvs.cf");
const KA: &str = include_str!("data/keepalived-ftp-fwmark.conf");
/// iptables-save output with the Red Hat FTP recipe's MARK rules, an IPv6 rule and a script line.
const IPT: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n\
    -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 21 -j MARK --set-xmark 0x15/0xffffffff\n\
    -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 10000:20000 -j MARK --set-xmark 0x15/0xffffffff\n\
    -A PREROUTING -d 2001:db8::1/128 -p tcp -m multiport --dports 21,30000:30100 -m comment --comment \"ftp v6\" -j MARK --set-mark 21\n\
    COMMIT\n\
    iptables -t mangle -A PREROUTING -p tcp -d 10.0.0.1 --dport 80 -j MARK --set-mark 5\n";

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
    DeleteLine(usize),
    DupLine(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tok = prop::sample::select(vec![
        "\"",
        "[",
        "]",
        "{",
        "}",
        "=",
        "\n",
        "-",
        "/",
        "0",
        "65536",
        "-1",
        "1e99",
        "nan",
        "::",
        "10.0.0.",
        ":",
        "[[service]]\n",
        "[[service.real_server]]\n",
        "address = \"10.0.2.9\"\n",
        "ports = [\"1-65535\"]\n",
        "\u{e9}",
        "\\",
        "#",
        "'",
        "\"\"\"",
        "!",
        " -j MARK --set-mark 21",
        " --dports 1,2:3",
        " -d 10.0.0.100/32",
        "*mangle\n",
    ]);
    prop_oneof![
        (any::<usize>(), 0usize..8).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), tok).prop_map(|(a, s)| Mutation::Insert(a, s.to_string())),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Mutation::Replace(a, c)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::DupLine(a, b)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in muts {
        let len = chars.len().max(1);
        match m {
            Mutation::Delete(a, n) => {
                let a = a % len;
                let b = (a + n).min(chars.len());
                if a < b {
                    chars.drain(a..b);
                }
            }
            Mutation::Insert(a, s) => {
                let a = a % (chars.len() + 1);
                chars.splice(a..a, s.chars());
            }
            Mutation::Replace(a, c) => {
                if !chars.is_empty() {
                    let a = a % chars.len();
                    chars[a] = *c;
                }
            }
            Mutation::DeleteLine(_) | Mutation::DupLine(..) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                match m {
                    Mutation::DeleteLine(a) => {
                        lines.remove(a % lines.len());
                    }
                    Mutation::DupLine(a, b) => {
                        let l = lines[a % lines.len()];
                        lines.insert(b % (lines.len() + 1), l);
                    }
                    _ => unreachable!(),
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

fn check_config(text: &str) {
    match Config::from_str(text, "fuzz.toml") {
        Ok(c) => {
            // Whatever validates renders to text that parses back equal.
            let t = c.to_toml();
            let back = Config::from_str(&t, "rendered")
                .unwrap_or_else(|e| panic!("{e}\n--- input\n{text}\n--- rendered\n{t}"));
            assert_eq!(c, back);
        }
        Err(e) => {
            let _ = e.to_string();
            if let Some(l) = e.line {
                assert!(l >= 1 && l <= text.split('\n').count().max(1), "line {l} out of range: {e}");
            }
        }
    }
}

fn check_imports(text: &str) {
    for imp in [from_lvs_cf(text), from_keepalived(text)].into_iter().flatten() {
        let _ = imp.to_toml();
    }
}

/// Marks from any rules text: an error names a line of it; marks that come out feed the
/// importers without a panic.
fn check_marks(text: &str) {
    match marks_from_iptables(text) {
        Ok((marks, _)) => {
            for imp in
                [from_lvs_cf_with_marks(LVS, &marks), from_keepalived_with_marks(KA, &marks)].into_iter().flatten()
            {
                let _ = imp.to_toml();
            }
        }
        Err(e) => {
            let l = e.line.expect("a line");
            assert!(l >= 1 && l <= text.split('\n').count().max(1), "line {l} out of range: {e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        check_config(&text);
        check_imports(&text);
        check_marks(&text);
    }

    #[test]
    fn mutated_configs_never_panic(muts in prop::collection::vec(mutation(), 1..6), which in 0..2usize) {
        let base = if which == 0 { EXAMPLE } else { DR };
        check_config(&apply(base, &muts));
    }

    #[test]
    fn mutated_imports_never_panic(muts in prop::collection::vec(mutation(), 1..6), which in 0..2usize) {
        let base = [LVS, KA][which];
        check_imports(&apply(base, &muts));
    }

    #[test]
    fn mutated_iptables_rules_never_panic(muts in prop::collection::vec(mutation(), 1..6)) {
        check_marks(&apply(IPT, &muts));
    }
}
