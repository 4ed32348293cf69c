#[test]
fn smoke() {
    for f in ["examples/nat-ftp.toml", "examples/dr-ftp.toml"] {
        match ferrovs_cfg::Config::from_file(std::path::Path::new(f)) {
            Ok(c) => println!("{c:#?}"),
            Err(e) => panic!("{e}"),
        }
    }
    let bad = "[engine]\nbackend = \"memory\"\nbogus = 1\n";
    println!("{}", ferrovs_cfg::Config::from_str(bad, "x.toml").unwrap_err());
    let bad = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.300\"\n";
    println!("{}", ferrovs_cfg::Config::from_str(bad, "x.toml").unwrap_err());
    let bad = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.3\"\npersistence = { timeout = 3, foo = 2 }\n";
    println!("{}", ferrovs_cfg::Config::from_str(bad, "x.toml").unwrap_err());
    let bad = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\n\n[[service.real_server]]\nport = 3\n";
    println!("{}", ferrovs_cfg::Config::from_str(bad, "x.toml").unwrap_err());
    let bad = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.3\"\nports = [80, 0]\n";
    println!("{}", ferrovs_cfg::Config::from_str(bad, "x.toml").unwrap_err());
}
#[test]
fn rt() {
    for f in ["examples/nat-ftp.toml", "examples/dr-ftp.toml"] {
        let c = ferrovs_cfg::Config::from_file(std::path::Path::new(f)).unwrap();
        let t = c.to_toml();
        let mut c2 = ferrovs_cfg::Config::from_str(&t, "rt").unwrap_or_else(|e| panic!("{e}\n{t}"));
        c2.source = c.source.clone();
        assert_eq!(c, c2);
        if f.contains("nat") { println!("{t}"); }
    }
}
