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
    /// sorry server added as its last real server, at weight 1 while none of its real servers
    /// takes new connections (all at weight 0: down and quiesced, or set so; or none left),
    /// as keepalived adds its `sorry_server` when a virtual server's alive weight falls below
    /// its quorum (1), and at weight 0 otherwise (keepalived's `sorry_server_inhibit`), so the
    /// connections it took finish there. `None`: no service has a sorry server.
    pub fn serving(&self) -> Option<Config> {
        if self.services.iter().all(|s| s.sorry_server.is_none()) {
            return None;
        }
        let mut c = self.clone();
        for s in c.services.iter_mut() {
            let weight = s.needs_sorry() as u32;
            if let Some(ss) = s.sorry_server {
                s.real_servers.push(RealServer {
                    address: ss.address,
                    port: ss.port,
                    weight,
                    upper: 0,
                    lower: 0,
                    forward: None,
                    proxy_protocol: None,
                });
            }
        }
        Some(c)
    }
}
