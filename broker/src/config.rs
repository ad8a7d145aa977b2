//! The broker's settings: command-line flags, optionally on top of a TOML
//! file (`--config`). A flag given on the command line wins over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Settings as read from a TOML file; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This broker's id.
    pub node_id: Option<u32>,
    /// Where data lives.
    pub data_dir: Option<PathBuf>,
    /// Client listener address.
    pub listen: Option<SocketAddr>,
    /// Address clients are told to use, when it differs from `listen`.
    pub advertised_addr: Option<String>,
    /// How often retention runs, ms.
    pub retention_check_ms: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// This broker's id. Default 1.
    pub node_id: u32,
    /// Where data lives. Default `./data`.
    pub data_dir: PathBuf,
    /// Client listener address. Default `127.0.0.1:9092`; port 0 picks one.
    pub listen: SocketAddr,
    /// `host:port` clients are told to use. Default: the bound address.
    pub advertised_addr: Option<String>,
    /// How often retention runs, ms. Default 60 s.
    pub retention_check_ms: u64,
}

impl BrokerConfig {
    /// Defaults, overridden by the file, overridden by flags.
    pub fn resolve(
        file: FileConfig,
        node_id: Option<u32>,
        data_dir: Option<PathBuf>,
        listen: Option<SocketAddr>,
        advertised_addr: Option<String>,
    ) -> BrokerConfig {
        BrokerConfig {
            node_id: node_id.or(file.node_id).unwrap_or(1),
            data_dir: data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            listen: listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092))),
            advertised_addr: advertised_addr.or(file.advertised_addr),
            retention_check_ms: file.retention_check_ms.unwrap_or(60_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file: FileConfig = toml::from_str("node_id = 7\ndata_dir = \"/var/rill\"\n").unwrap();
        let c = BrokerConfig::resolve(file, None, Some("/tmp/x".into()), None, None);
        assert_eq!(c.node_id, 7);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen, "127.0.0.1:9092".parse().unwrap());
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
    }
}
