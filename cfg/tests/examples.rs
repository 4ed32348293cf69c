//! Every file in cfg/examples/ parses, and to_toml round-trips.

use ferrovs_cfg::*;

fn roundtrip(c: &Config) {
    let t = c.to_toml();
    let mut back = Config::from_str(&t, "rendered.toml").unwrap_or_else(|e| panic!("{e}\n{t}"));
    back.source = c.source.clone();
    assert_eq!(*c, back, "round trip changed the config:\n{t}");
    // Canonical: rendering again gives the same text.
    assert_eq!(back.to_toml(), t);
}

#[test]
fn every_example_parses_and_round_trips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let c = Config::from_file(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.source.as_deref(), Some(p.as_path()));
            assert!(!c.services.is_empty(), "{}", p.display());
            roundtrip(&c);
            n += 1;
        }
    }
    assert!(n >= 2, "expected nat-ftp.toml and dr-ftp.toml, found {n} examples");
}

#[test]
fn nat_and_dr_examples_have_ftp_services() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let nat = Config::from_file(&dir.join("nat-ftp.toml")).unwrap();
    let ftp = nat.services.iter().find(|s| s.name == "ftp").unwrap();
    assert_eq!(ftp.forward, Forward::Nat);
    assert!(ftp.ftp.is_some() && ftp.has_port(21));
    let dr = Config::from_file(&dir.join("dr-ftp.toml")).unwrap();
    let ftp = dr.services.iter().find(|s| s.name == "ftp").unwrap();
    assert_eq!(ftp.forward, Forward::Dr);
    assert!(ftp.ftp.is_some() && ftp.has_port(21) && ftp.has_port(10050));
    assert_eq!(dr.engine.cores, Some(vec![0, 1]));
}

#[test]
fn weird_strings_round_trip() {
    let t = "[engine]\nbackend = \"memory\"\ncontrol_socket = '/tmp/a\"b\\c'\n[[service]]\nname = \"q\\\"uote \\\\ é\"\nvip = \"::\"\n[service.health_check]\ntype = \"send_expect\"\nsend = \"\\t\\r\\n\\u007f\"\nexpect = \"x\"\ninterval = 0.1\ntimeout = 1e-3\n";
    let c = Config::from_str(t, "w").unwrap();
    assert_eq!(c.services[0].name, "q\"uote \\ é");
    roundtrip(&c);
}

/// An `exec` check: its argv (spaces, quotes, backslashes, non-ASCII kept as they are) and
/// user read, rendered and read back the same.
#[test]
fn exec_health_check_round_trips() {
    let t = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"web\"\nvip = \"10.0.0.1\"\nports = [80]\n\
             [service.health_check]\ntype = \"exec\"\ncommand = [\"/usr/local/bin/check web\", \"--url\", \"a 'b' \\\"c\\\" \\\\ é\", \"\"]\n\
             user = \"nobody\"\ntimeout = 2.5\nrise = 1\nfall = 2\n";
    let c = Config::from_str(t, "x").unwrap();
    let h = c.services[0].health_checks.first().unwrap();
    assert_eq!(h.kind, HealthCheckKind::Exec);
    assert_eq!(h.command, ["/usr/local/bin/check web", "--url", "a 'b' \"c\" \\ é", ""]);
    assert_eq!((h.user.as_deref(), h.timeout, h.rise, h.fall), (Some("nobody"), 2.5, 1, 2));
    roundtrip(&c);
    assert!(c.to_toml().contains("type = \"exec\"\ncommand = [\"/usr/local/bin/check web\", "), "{}", c.to_toml());
    // Without user: the daemon's; the other types carry no command.
    let c = Config::from_str(&t.replace("user = \"nobody\"\n", ""), "x").unwrap();
    assert_eq!(c.services[0].health_checks.first().unwrap().user, None);
    roundtrip(&c);
}
