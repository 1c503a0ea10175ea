//! `server serve --data-dir DIR [--listen ADDR] [--reference-dir DIR]`: the registry service.
//! `server recompute --data-dir DIR [--reference-dir DIR]`: recomputes every stored
//! classification with the current reference data, with the server stopped.
//! `server user add|passwd|assign|unassign|role|list …` and `server device list|revoke …`:
//! accounts and enrolled devices, with the server stopped (see `server::auth::cli`).
//! `server rebuild --data-dir DIR --out NEW_DIR`: rebuilds the registry from its journal alone
//! (see `server::journal`), with the server stopped.
//!
//! The first line on stdout is `listening on http://ADDR`, so that a caller that asked for
//! port 0 learns the port. Logs go to stderr (`RUST_LOG` filters them; `info` by default).

use anyhow::Context;
use clap::Parser;
use server::config::{Cli, Command, Config};
use server::AppState;
use std::io::{IsTerminal, Write};
use tracing_subscriber::EnvFilter;

/// jemalloc: a push is thousands of small allocations (field maps of short strings), where it
/// spends about a third less CPU than glibc malloc (see `tikv-jemallocator` in Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let outcome = match cli.command {
        Command::Serve(args) => Config::from_args(args)
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                tokio::runtime::Runtime::new()
                    .context("starting the async runtime")?
                    .block_on(serve(config))
            }),
        Command::Recompute(args) => server::config::RecomputeConfig::from_args(args)
            .map_err(anyhow::Error::from)
            .and_then(|config| server::classification::run_command(&config).map(|_| ())),
        Command::User { command } => server::auth::cli::run_user(command)
            .map(|done| println!("{done}"))
            .map_err(anyhow::Error::from),
        Command::Device { command } => server::auth::cli::run_device(command)
            .map(|done| println!("{done}"))
            .map_err(anyhow::Error::from),
        Command::Rebuild(args) => server::store::rebuild(&args.data_dir, &args.out)
            .map(|done| {
                println!(
                    "rebuilt {} from {} journal records ({} writes): {} entries, crc32 {:08x}. Accounts and reference files are not in the journal: copy them from {} if it still has them.",
                    args.out.display(),
                    done.records,
                    done.writes,
                    done.digest.entries,
                    done.digest.crc32,
                    args.data_dir.display()
                )
            })
            .map_err(anyhow::Error::from),
        Command::Check(args) => server::store::check(&args.data_dir)
            .map(|checked| {
                println!(
                    "{}: the journal's {} records and the registry's {} entries, with every row they refer to, read and checked (crc32 {:08x})",
                    args.data_dir.display(),
                    checked.records,
                    checked.digest.entries,
                    checked.digest.crc32
                )
            })
            .map_err(anyhow::Error::from),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("server: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (reference, loaded) =
        server::reference::load(&config.data_dir, config.reference_dir.as_deref())?;
    tracing::info!(
        dir = ?loaded.dir,
        files = ?loaded.files,
        fingerprint = %loaded.fingerprint,
        "reference data loaded"
    );
    let state = AppState::open_with(&config.data_dir, reference)
        .with_context(|| format!("opening the registry in {}", config.data_dir.display()))?;
    if state.auth().accounts().users()?.is_empty() {
        tracing::warn!(
            "chưa có tài khoản nào / there are no accounts yet: stop the server and create the first administrator with `server user add NAME --role administrator --area '*' --data-dir DIR`"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}").context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
    }
    tracing::info!(data_dir = %config.data_dir.display(), "listening on http://{addr}");
    server::run(listener, state, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("stopped; the registry is flushed");
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
