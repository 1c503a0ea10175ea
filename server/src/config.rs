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
}

/// A checked configuration for `server serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--data-dir is empty: name the directory that holds (or will hold) the registry")]
    EmptyDataDir,
    #[error("--data-dir {0} exists but is not a directory: name a directory")]
    NotADirectory(PathBuf),
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
        let Command::Serve(args) = cli.command;
        let config = Config::from_args(args).expect("valid");
        assert_eq!(config.data_dir, data_dir);
        assert_eq!(config.listen.port(), 0);

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let args = ServeArgs {
            data_dir: file,
            listen: config.listen,
        };
        assert!(matches!(
            Config::from_args(args),
            Err(ConfigError::NotADirectory(_))
        ));
        assert!(Cli::try_parse_from(["server", "serve", "--listen", "nowhere"]).is_err());
    }
}
