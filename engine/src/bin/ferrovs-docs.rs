//! `ferrovs-docs OUTDIR`: write the man pages (ferrovs(8), ferrovsadm(8),
//! ferrovs.toml(5)) and the bash and zsh completions of both commands, all
//! generated from the clap definitions and the configuration key table.
//! Used by `scripts/package`; not installed.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;
use std::process::ExitCode;

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn man(cmd: clap::Command, section: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section(section)
        .manual("System Administration")
        .source(format!("ferrovs {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn run(out: &Path) -> Result<(), String> {
    let ferrovs = ferrovs_engine::cli::Cli::command();
    let adm = ferrovs_engine::cli::ferrovsadm_command();
    write(&out.join("man/ferrovs.8"), &man(ferrovs.clone(), "8")?)?;
    // One page per subcommand, named like git's and cargo's: ferrovs-run(8).
    for sub in ferrovs.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ferrovs-{}", sub.get_name());
        let page = sub
            .clone()
            .name(clap::builder::Str::from(name.clone().leak() as &str))
            .display_name(name.clone())
            .bin_name(format!("ferrovs {}", sub.get_name()));
        write(&out.join(format!("man/{name}.8")), &man(page, "8")?)?;
    }
    write(&out.join("man/ferrovsadm.8"), &man(adm.clone(), "8")?)?;
    write(&out.join("man/ferrovs.toml.5"), ferrovs_cfg::keys::man_page(env!("CARGO_PKG_VERSION")).as_bytes())?;
    for (cmd, name) in [(ferrovs, "ferrovs"), (adm, "ferrovsadm")] {
        for (shell, file) in [(Shell::Bash, name.to_string()), (Shell::Zsh, format!("_{name}"))] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name, &mut buf);
            write(&out.join(format!("completions/{shell}/{file}")), &buf)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: ferrovs-docs OUTDIR");
        return ExitCode::from(2);
    };
    match run(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrovs-docs: {e}");
            ExitCode::FAILURE
        }
    }
}
