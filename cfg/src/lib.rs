//! ferrovs configuration: TOML text -> validated, immutable [`Config`].
//!
//! ```no_run
//! let cfg = ferrovs_cfg::Config::from_file(std::path::Path::new("/etc/ferrovs.toml")).unwrap();
//! println!("{} services", cfg.services.len());
//! ```
pub mod model;
pub use model::*;

mod error;
pub mod import;
pub mod keys;
mod raw;
mod render;
mod validate;

pub use error::ConfigError;

impl Config {
    /// Parse and validate TOML text. `origin` names the text in error messages
    /// (usually the file name). `source` of the result is `None`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        validate::parse(text, origin)
    }

    /// Read, parse and validate a config file; sets `Config::source`.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: origin.clone(),
            line: None,
            column: None,
            message: format!("cannot read config: {e}"),
        })?;
        let mut cfg = Config::from_str(&text, &origin)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Canonical TOML that [`Config::from_str`] parses back to an equal
    /// `Config` (except `source`, which is not part of the text).
    pub fn to_toml(&self) -> String {
        render::config(self)
    }

    /// The destinations the data plane serves: this configuration with each service's
    /// sorry server added as its last real server, at weight 1 while the service's quorum is
    /// down ([`Service::quorum_up`]: its live real servers' weights add up to less than its
    /// `quorum`, by default 1: none takes new connections), as keepalived adds its
    /// `sorry_server` when a virtual server's alive weight falls below its quorum, and at
    /// weight 0 otherwise (keepalived's `sorry_server_inhibit`), so the connections it took
    /// finish there. While the quorum is down the real servers are at weight 0 too (keepalived
    /// takes them out of the pool): the sorry server takes every new connection, and those
    /// the real servers have finish there. `None`: no service has a sorry server.
    ///
    /// Without a memory of the quorum states: as at the daemon's start, see
    /// [`Config::serving_after`].
    pub fn serving(&self) -> Option<Config> {
        self.serving_after(None)
    }

    /// [`Config::serving`] after `prev`, the configuration served before (what this returned
    /// last time): a service's quorum state there (its sorry server at weight 1: down) is the
    /// memory its `hysteresis` needs. A service new in `prev`, or whose sorry server changed,
    /// has no memory. A configuration that is already served (each sorry server among its
    /// service's real servers, which validation refuses in any other) is served as it is:
    /// `None`.
    pub fn serving_after(&self, prev: Option<&Config>) -> Option<Config> {
        let pending =
            |s: &Service| s.sorry_server.is_some_and(|ss| !s.real_servers.iter().any(|r| is_sorry(s, &ss, r)));
        if !self.services.iter().any(pending) {
            return None;
        }
        let mut c = self.clone();
        for s in c.services.iter_mut() {
            let Some(ss) = s.sorry_server.filter(|_| pending(s)) else { continue };
            let was_up = prev.and_then(|p| {
                let ps = p.services.iter().find(|p| p.name == s.name && p.sorry_server == s.sorry_server)?;
                ps.real_servers.iter().find(|r| is_sorry(ps, &ss, r)).map(|r| r.weight == 0)
            });
            let up = s.quorum_up(was_up);
            if !up {
                for r in s.real_servers.iter_mut() {
                    r.weight = 0;
                }
            }
            s.real_servers.push(RealServer {
                address: ss.address,
                port: ss.port,
                weight: u32::from(!up),
                upper: 0,
                lower: 0,
                forward: None,
                proxy_protocol: None,
                health_checks: None,
            });
        }
        Some(c)
    }
}

/// Is `r` the sorry server `ss` of `s` (the same destination)?
fn is_sorry(s: &Service, ss: &SorryServer, r: &RealServer) -> bool {
    r.address == ss.address && s.server_port(r.port) == s.server_port(ss.port)
}
