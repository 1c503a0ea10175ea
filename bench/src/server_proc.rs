//! The registry server under test, as a child process of its own, so that its memory and CPU
//! are its own: the benchmark re-executes itself as `bench serve-child --data-dir DIR`, which
//! runs `server::run` exactly as the `server` binary does (minus the request log), on
//! 127.0.0.1 and a free port. Closing the child's stdin stops it gracefully (the registry is
//! flushed), so no signal handling is needed.
//!
//! Before the server starts, the benchmark's account is made in its data directory through
//! the server's library, as `server user add` does: an administrator of every area, so that
//! devices enrol over HTTP (`/v1/auth/enrol`, as `ho init` does) and sync any commune.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The child's entry point: serve the registry in `data_dir` until stdin closes.
pub fn serve_child(data_dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let state = server::AppState::open(data_dir)
            .with_context(|| format!("opening the registry in {}", data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            // EOF (the parent closed the pipe or died) is the signal to stop.
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = stop.send(());
        });
        server::run(listener, state, async move {
            let _ = stopped.await;
        })
        .await
        .context("serving")
    })
}

/// Memory of a process, from `/proc/PID/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Peak resident set size (VmHWM).
    pub peak_kib: u64,
    /// Resident set size now (VmRSS).
    pub rss_kib: u64,
}

pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        peak_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
    })
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    // The clock tick is 100 Hz on Linux (USER_HZ).
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// Bytes a directory takes on disk (allocated blocks, as `du` counts them) and its files'
/// apparent sizes.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskUse {
    pub allocated: u64,
    pub apparent: u64,
}

pub fn disk_use(dir: &Path) -> anyhow::Result<DiskUse> {
    use std::os::unix::fs::MetadataExt;
    let mut total = DiskUse::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total.allocated += meta.blocks() * 512;
                total.apparent += meta.len();
            }
        }
    }
    Ok(total)
}

/// The account every device of the benchmark enrols for.
pub const USER: &str = "bench.quan.tri";
/// Its password.
pub const PASSWORD: &str = "mật khẩu đo hiệu năng";

/// Makes the benchmark's account in a fresh registry directory.
fn make_account(dir: &Path) -> anyhow::Result<()> {
    let state = server::AppState::open(dir)
        .with_context(|| format!("opening the registry in {}", dir.display()))?;
    state
        .auth()
        .create_user(
            &server::auth::Actor::command_line(),
            server::auth::NewUser {
                username: USER.to_string(),
                password: PASSWORD.to_string(),
                role: server::scope::Role::Administrator,
                areas: vec![server::auth::Area::Everything],
            },
        )
        .map_err(|error| anyhow::anyhow!("making the benchmark's account: {error}"))?;
    state.registry().flush()?;
    Ok(())
}

/// A running registry server.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pub url: String,
}

impl ServerProcess {
    /// Starts a server on a fresh registry in `dir`, with the benchmark's account.
    pub fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
        make_account(dir)?;
        let exe = std::env::current_exe().context("finding the benchmark's own executable")?;
        let mut child = Command::new(exe)
            .arg("serve-child")
            .arg("--data-dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the server's address")?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the server said {line:?} instead of its address"))?
            .to_string();
        Ok(ServerProcess { child, stdin, url })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid())
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of(self.pid())
    }

    /// Stops the server (it flushes the registry first) and waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        for _ in 0..600 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        anyhow::bail!("the server did not stop within 30 s and was killed")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            // Not stopped explicitly (an error path): do not leave it running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
