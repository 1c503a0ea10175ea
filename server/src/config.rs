//! The command line and environment, parsed by clap and validated into a [`Config`] before
//! any file is opened or socket bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The registry server for the poor / near-poor household review.
#[derive(Debug, Parser)]
#[command(name = "server", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry over HTTP until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Tính lại phân loại mọi hộ theo dữ liệu tham chiếu hiện hành / recompute every
    /// household's classification with the current reference data (run with the server
    /// stopped).
    Recompute(RecomputeArgs),
    /// Tài khoản: tạo, đặt mật khẩu, giao khu vực, liệt kê / accounts: add, passwd, assign,
    /// unassign, role, list (run with the server stopped, or use /v1/admin/).
    User {
        #[command(subcommand)]
        command: crate::auth::cli::UserCommand,
    },
    /// Thiết bị: liệt kê, thu hồi / enrolled devices: list, revoke (server stopped).
    Device {
        #[command(subcommand)]
        command: crate::auth::cli::DeviceCommand,
    },
    /// Dựng lại sổ đăng ký từ nhật ký vào thư mục mới / rebuild the registry from its journal
    /// alone into a new directory, when the store is damaged (run with the server stopped).
    Rebuild(RebuildArgs),
    /// Kiểm tra nhật ký và sổ đăng ký, đọc mọi bản ghi / check the journal and the registry:
    /// read every record and row and check every checksum (run with the server stopped, for
    /// instance on a restored backup).
    Check(CheckArgs),
}

#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// Directory that holds the registry and its journal.
    #[arg(long, env = "HO_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Args)]
pub struct RebuildArgs {
    /// Directory whose journal (DIR/journal) to rebuild from; its sled store is not read.
    #[arg(long, env = "HO_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// New (or empty) directory to rebuild into; it becomes a complete data directory.
    #[arg(long, value_name = "NEW_DIR")]
    pub out: PathBuf,
}

#[derive(Clone, Debug, Args)]
pub struct RecomputeArgs {
    /// Directory that holds the registry.
    #[arg(long, env = "HO_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Folder of corrected reference files (default: <data-dir>/reference if it exists, else
    /// the embedded defaults).
    #[arg(long, env = "HO_REFERENCE_DIR", value_name = "DIR")]
    pub reference_dir: Option<PathBuf>,
}

/// A checked configuration for `server recompute`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecomputeConfig {
    pub data_dir: PathBuf,
    pub reference_dir: Option<PathBuf>,
}

impl RecomputeConfig {
    pub fn from_args(args: RecomputeArgs) -> Result<RecomputeConfig, ConfigError> {
        if !args.data_dir.is_dir() {
            return Err(ConfigError::NoRegistry(args.data_dir));
        }
        Ok(RecomputeConfig {
            data_dir: args.data_dir,
            reference_dir: args.reference_dir,
        })
    }
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Directory that holds the registry; created if it does not exist.
    #[arg(long, env = "HO_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (the first line on stdout names it).
    #[arg(
        long,
        env = "HO_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Folder of corrected reference files (default: <data-dir>/reference if it exists, else
    /// the embedded defaults).
    #[arg(long, env = "HO_REFERENCE_DIR", value_name = "DIR")]
    pub reference_dir: Option<PathBuf>,
}

/// A checked configuration for `server serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub reference_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--data-dir is empty: name the directory that holds (or will hold) the registry")]
    EmptyDataDir,
    #[error("--data-dir {0} exists but is not a directory: name a directory")]
    NotADirectory(PathBuf),
    #[error("--data-dir {0} is not a registry folder: name the folder `server serve` uses")]
    NoRegistry(PathBuf),
}

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        if args.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        if args.data_dir.exists() && !args.data_dir.is_dir() {
            return Err(ConfigError::NotADirectory(args.data_dir));
        }
        Ok(Config {
            data_dir: args.data_dir,
            listen: args.listen,
            reference_dir: args.reference_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_a_checked_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("registry");
        let cli = Cli::try_parse_from([
            "server",
            "serve",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("parsed as another command");
        };
        let config = Config::from_args(args).expect("valid");
        assert_eq!(config.data_dir, data_dir);
        assert_eq!(config.listen.port(), 0);

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let args = ServeArgs {
            data_dir: file,
            listen: config.listen,
            reference_dir: None,
        };
        assert!(matches!(
            Config::from_args(args),
            Err(ConfigError::NotADirectory(_))
        ));
        assert!(Cli::try_parse_from(["server", "serve", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn recompute_needs_an_existing_registry_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_str().expect("utf-8 path");
        let cli =
            Cli::try_parse_from(["server", "recompute", "--data-dir", data_dir]).expect("parses");
        let Command::Recompute(args) = cli.command else {
            panic!("parsed as another command");
        };
        let config = RecomputeConfig::from_args(args).expect("valid");
        assert_eq!(config.reference_dir, None);
        let missing = RecomputeArgs {
            data_dir: dir.path().join("nowhere"),
            reference_dir: None,
        };
        assert!(matches!(
            RecomputeConfig::from_args(missing),
            Err(ConfigError::NoRegistry(_))
        ));
    }
}
