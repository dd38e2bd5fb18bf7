//! Shared by the integration tests: where the captures are (the fixtures in
//! this repository, the shared corpus next to it, extra captures named by
//! `CONNTRACE_EXTRA_CAPTURES`), how to replay one with the built binary, and
//! the tshark reference ([`tshark`]).

pub mod capture;
pub mod nginx;
pub mod tshark;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (where Cargo.toml is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every capture in `fixtures/`, sorted; not the cause scenarios of
/// `fixtures/causes/`, which `causes.rs` judges against their own truth.
pub fn fixtures() -> Vec<PathBuf> {
    let causes = root().join("fixtures/causes");
    captures_under(&root().join("fixtures"))
        .into_iter()
        .filter(|p| !p.starts_with(&causes))
        .collect()
}

/// The shared corpus's capture folder, if it exists: `CONNTRACE_CORPUS` (the
/// corpus folder, holding `files/`), else `../shared/corpus` beside the
/// repository, else `/work/shared/corpus` (where a clone elsewhere on the
/// same machine finds it).
pub fn corpus_dir() -> Option<PathBuf> {
    let candidates = std::env::var_os("CONNTRACE_CORPUS")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root().join("../shared/corpus"),
            PathBuf::from("/work/shared/corpus"),
        ]);
    candidates.map(|c| c.join("files")).find(|d| d.is_dir())
}

/// Captures in the folder named by `CONNTRACE_EXTRA_CAPTURES`, if set.
pub fn extra_captures() -> Option<(PathBuf, Vec<PathBuf>)> {
    let dir = PathBuf::from(std::env::var_os("CONNTRACE_EXTRA_CAPTURES")?);
    let files = captures_under(&dir);
    Some((dir, files))
}

/// Capture files (.pcap, .pcapng, .cap, and those gzip-compressed) below `dir`,
/// sorted by path.
pub fn captures_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_capture(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn is_capture(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".pcap", ".pcapng", ".cap"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// What one `conntrace replay --format json FILE` run produced.
pub struct Replay {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Replay {
    pub fn panicked(&self) -> bool {
        self.code == Some(101) || self.stderr.contains("panicked")
    }

    /// The JSON report, or why there is none.
    pub fn report(&self) -> Result<serde_json::Value, String> {
        if self.code != Some(0) {
            return Err(format!("exit code {:?}: {}", self.code, self.stderr.trim()));
        }
        serde_json::from_str(&self.stdout)
            .map_err(|e| format!("stdout is not one JSON document: {e}"))
    }
}

/// The conntrace binary under test: `CONNTRACE_BIN` if set, else the one
/// cargo built for this test run. (With a target directory shared between
/// several checkouts, cargo's copy at target/debug/conntrace is whichever
/// checkout built last; copying it aside right after the build and naming the
/// copy in `CONNTRACE_BIN` pins it.)
pub fn binary() -> PathBuf {
    std::env::var_os("CONNTRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conntrace")))
}

/// The standard output of a command that must have succeeded (else the
/// test fails with its exit status and standard error).
pub fn stdout_of(out: &std::process::Output) -> &[u8] {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    &out.stdout
}

/// The JSON report of a run that must have succeeded.
pub fn report_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(stdout_of(out)).expect("one JSON document")
}

pub fn replay(file: &Path) -> Replay {
    let out = Command::new(binary())
        .args(["replay", "--format", "json"])
        .arg(file)
        .output()
        .expect("the conntrace binary runs");
    Replay {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `path` relative to `base` with forward slashes, for messages and tables.
pub fn display_name(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// `f` over `items` on as many threads as there are cores, results in order.
/// tshark and the replays are separate processes, so this mostly saves waiting.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                slots.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}

/// Whether this process runs as root (effective uid 0): live tests capture on
/// loopback, which needs root (or the capture capabilities).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether CI runs these tests: it is root and installs tshark, nginx and the
/// rest, so a test that would skip there fails instead.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `what` a test needs is `available`. Without it the test says so
/// and skips, except under CI (`CI=true`), where it fails: a suite must not
/// pass by skipping where it should run.
#[track_caller]
pub fn need(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    assert!(
        !under_ci(),
        "{test}: needs {what}, which CI provides (CI=true); it must not be skipped here"
    );
    eprintln!("skipping {test}: needs {what}");
    false
}

/// How `child` ended, if it did within `limit`; past it, it is killed.
/// A thread of its own waits for it and says so over a channel, so the test
/// goes on the moment it exits. The child comes back, reaped (its pipes
/// still to read).
pub fn exit_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> (std::process::Child, Option<std::process::ExitStatus>) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait().unwrap();
        let _ = tx.send(status);
        child
    });
    let status = rx.recv_timeout(limit).ok();
    if status.is_none() {
        // Not reaped yet (its waiter holds it), so the pid is still its own.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    (waiter.join().unwrap(), status)
}

/// Whether live capture can run here (root); see [`need`].
pub fn can_capture(_test: &str) -> bool {
    need("root, for live capture on loopback", is_root())
}
