//! The PouchDB peer (`../shared/peers/pouchdb/`), run from a scratch copy where `npm install`
//! has been done: its `server.js` (express-pouchdb on LevelDB) as a child process on
//! 127.0.0.1, its own `bench.js` on our generated households (`--docs`), and `peer/wire.js`
//! from this crate for what `bench.js` does not measure (bytes on the wire, first pull).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serde_json::Value;

use crate::proxy::{Bytes, Proxy};
use crate::server_proc::{memory_of, Memory};

/// The script beside `bench.js`, written into the run's temp dir at start.
const WIRE_JS: &str = include_str!("../peer/wire.js");

/// A scratch copy of the peer with its packages installed.
#[derive(Clone, Debug)]
pub struct Peer {
    dir: PathBuf,
    /// Where the run keeps its peer data and scripts.
    work: PathBuf,
}

/// What the peer's `bench.js` reported for one run.
#[derive(Clone, Debug)]
pub struct BenchJs {
    pub line: Value,
    pub server_memory: Memory,
}

impl BenchJs {
    pub fn number(&self, key: &str) -> Option<f64> {
        self.line.get(key).and_then(Value::as_f64)
    }
}

/// What `wire.js` measured.
#[derive(Clone, Debug)]
pub struct Wire {
    pub line: Value,
    pub push: Bytes,
    pub pull: Bytes,
}

impl Peer {
    pub fn new(dir: &Path, work: &Path) -> anyhow::Result<Peer> {
        for needed in [
            "server.js",
            "bench.js",
            "node_modules/pouchdb",
            "node_modules/express-pouchdb",
        ] {
            anyhow::ensure!(
                dir.join(needed).exists(),
                "{} has no {needed}: copy ../shared/peers/pouchdb to a scratch directory and run `npm install` there (see the README)",
                dir.display()
            );
        }
        std::fs::create_dir_all(work)?;
        std::fs::write(work.join("wire.js"), WIRE_JS)?;
        Ok(Peer {
            dir: dir.canonicalize()?,
            work: work.to_path_buf(),
        })
    }

    /// Runs `bench.js` on the first `n` households of `docs` against a fresh peer server.
    pub fn bench_js(&self, docs: &Path, n: usize, run: usize) -> anyhow::Result<BenchJs> {
        let server = PeerServer::start(&self.dir, &self.work.join(format!("server-{run}")))?;
        let client_dir = self.work.join(format!("client-{run}"));
        let output = Command::new("node")
            .current_dir(&self.dir)
            .arg("bench.js")
            .args(["--n", &n.to_string(), "--run", &run.to_string()])
            .args(["--server", &server.url])
            .arg("--dir")
            .arg(&client_dir)
            .arg("--docs")
            .arg(docs)
            .stderr(Stdio::inherit())
            .output()
            .context("running the peer's bench.js")?;
        let server_memory = server.memory()?;
        server.stop();
        let _ = std::fs::remove_dir_all(&client_dir);
        anyhow::ensure!(output.status.success(), "the peer's bench.js failed");
        Ok(BenchJs {
            line: last_json_line(&output.stdout)?,
            server_memory,
        })
    }

    /// Runs `wire.js`: a first push and first pulls of the first `n` households of `docs`.
    pub fn wire(&self, docs: &Path, n: usize, pulls: usize, run: usize) -> anyhow::Result<Wire> {
        let server = PeerServer::start(&self.dir, &self.work.join(format!("wire-server-{run}")))?;
        let push_proxy = Proxy::start(&server.url)?;
        let pull_proxy = Proxy::start(&server.url)?;
        let client_dir = self.work.join(format!("wire-client-{run}"));
        let output = Command::new("node")
            .current_dir(&self.work)
            .env("NODE_PATH", self.dir.join("node_modules"))
            .arg("wire.js")
            .args(["--n", &n.to_string(), "--pulls", &pulls.to_string()])
            .args(["--push", &push_proxy.url, "--pull", &pull_proxy.url])
            .args(["--direct", &server.url])
            .arg("--dir")
            .arg(&client_dir)
            .arg("--docs")
            .arg(docs)
            .stderr(Stdio::inherit())
            .output()
            .context("running wire.js against the peer")?;
        server.stop();
        let _ = std::fs::remove_dir_all(&client_dir);
        anyhow::ensure!(output.status.success(), "wire.js failed against the peer");
        Ok(Wire {
            line: last_json_line(&output.stdout)?,
            push: push_proxy.bytes(),
            pull: pull_proxy.bytes(),
        })
    }
}

fn last_json_line(stdout: &[u8]) -> anyhow::Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON line in the peer's output: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

/// `node server.js PORT DIR` in the peer's directory, with a fresh data directory.
struct PeerServer {
    child: Child,
    url: String,
    data: PathBuf,
}

impl PeerServer {
    fn start(peer: &Path, data: &Path) -> anyhow::Result<PeerServer> {
        let _ = std::fs::remove_dir_all(data);
        // A free port: bind, note it, let go (the peer's server takes a port number).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new("node")
            .current_dir(peer)
            .arg("server.js")
            .arg(port.to_string())
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the peer's server.js (is node installed?)")?;
        let stdout = child.stdout.take().context("the peer server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(
            line.contains("listening"),
            "the peer's server said {line:?} instead of listening"
        );
        Ok(PeerServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
        })
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.child.id())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
