//! `conntrace audit -- CMD`: the reuse report of one program and its
//! children, and of nothing else on the host.
//!
//! The packets are told apart at socket birth, in the kernel, as they pass:
//!
//! 1. the command runs in a cgroup (v2) of its own, entered between fork
//!    and exec, so that every process it starts is in it too;
//! 2. an nftables table matches packets whose socket is in that cgroup
//!    (`socket cgroupv2`) and labels their conntrack entry (`ct label`), so
//!    that the server's answers, which belong to no socket of the command,
//!    carry the label too;
//! 3. every packet of a labelled connection is logged to an NFLOG group
//!    (`queue-threshold 1`: each at once, so its libpcap timestamp is when
//!    it passed), which the capture reads as the interface `nflog:N`.
//!
//! Packets are logged once: on the output hook as they leave a local
//! socket (loopback traffic passes there in both directions) and on
//! prerouting only when they come from another interface. A counter on the
//! output hook counts the TCP packets of everyone else, reported as
//! excluded. docs/audit.md says why this and not eBPF.
//!
//! Everything set up is named after conntrace's process id and removed when
//! [`Attribution`] is dropped; a run killed with SIGKILL leaves them behind,
//! and the next run removes those whose process is gone
//! ([`sweep_stale`]).
//!
//! The only unsafe code of the crate is here: libc calls the standard
//! library has no safe form of (between fork and exec, getgrouplist, kill).
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The prefix of every cgroup and nftables table an audit makes.
const NAME: &str = "conntrace_audit_";

/// NFLOG groups used by audits start here (one per concurrent audit).
const NFLOG_BASE: u16 = 17_000;

/// Why the command's packets cannot be told apart from others here.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error("needs root to make a cgroup and nftables rules (run with sudo)")]
    NotRoot,
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo lists no cgroup2)")]
    NoCgroup2,
    #[error("nft (Debian package nftables) is not installed")]
    NoNft,
    #[error("cannot make the cgroup {path}: {detail}")]
    Cgroup { path: PathBuf, detail: String },
    #[error("nft refused the audit rules: {0}")]
    Nft(String),
}

/// The cgroup, conntrack label and NFLOG group of one audit; removed on drop.
#[derive(Debug)]
pub struct Attribution {
    cgroup: PathBuf,
    table: String,
    /// The `ct label` bit marking the command's connections.
    pub label: u8,
    /// The NFLOG group its packets are logged to: capture `nflog:GROUP`.
    pub group: u16,
    /// `cgroup.procs` of the audit's cgroup, open for the child to write
    /// itself into between fork and exec.
    procs: fs::File,
}

/// What an audit set up, removed again: for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Teardown {
    /// TCP packets of other processes that passed while the audit ran.
    pub excluded_packets: Option<u64>,
    /// Processes still in the cgroup when it was removed (moved out).
    pub left_running: usize,
}

impl Attribution {
    /// Makes the cgroup and loads the rules.
    pub fn set_up() -> Result<Attribution, AttributionError> {
        if !is_root() {
            return Err(AttributionError::NotRoot);
        }
        let mount = cgroup2_mount().ok_or(AttributionError::NoCgroup2)?;
        if Command::new("nft")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(AttributionError::NoNft);
        }
        sweep_stale(&mount);
        let pid = std::process::id();
        let name = format!("{NAME}{pid}");
        let cgroup = mount.join(&name);
        let cgroup_error = |e: io::Error| AttributionError::Cgroup {
            path: cgroup.clone(),
            detail: e.to_string(),
        };
        match fs::create_dir(&cgroup) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cgroup_error(e)),
        }
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(cgroup.join("cgroup.procs"))
            .map_err(|e| {
                let _ = fs::remove_dir(&cgroup);
                cgroup_error(e)
            })?;
        let label = free_label(pid);
        let mut attribution = Attribution {
            cgroup,
            table: name,
            label,
            group: NFLOG_BASE + u16::from(label),
            procs,
        };
        // nft looks the cgroup up under /sys/fs/cgroup; a path that climbs
        // to the root first finds it wherever cgroup2 is mounted.
        let path = format!("../../..{}", attribution.cgroup.display());
        let rules = format!(
            r#"table inet {table} {{
  chain out {{
    type filter hook output priority mangle + 10; policy accept;
    meta l4proto tcp socket cgroupv2 level 1 "{path}" ct label set {label}
    meta l4proto tcp ct label {label} log group {group} queue-threshold 1
    meta l4proto tcp ct label != {label} counter
  }}
  chain pre {{
    type filter hook prerouting priority mangle + 10; policy accept;
    iif != "lo" meta l4proto tcp ct label {label} log group {group} queue-threshold 1
    iif != "lo" meta l4proto tcp ct label != {label} counter
  }}
}}
"#,
            table = attribution.table,
            group = attribution.group,
        );
        if let Err(e) = nft_load(&rules) {
            // Nothing of the table was made; the cgroup goes on drop.
            attribution.table.clear();
            return Err(e);
        }
        Ok(attribution)
    }

    /// The capture interface that delivers the command's packets.
    pub fn interface(&self) -> String {
        format!("nflog:{}", self.group)
    }

    /// The fd the child writes "0" to, entering the cgroup.
    pub fn procs_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.procs.as_raw_fd()
    }

    /// Reads the counters, moves out any process left in the cgroup (a
    /// daemon the command started), and removes the rules and the cgroup.
    pub fn tear_down(mut self) -> Teardown {
        let mut t = Teardown {
            excluded_packets: self.excluded_packets(),
            left_running: 0,
        };
        t.left_running = self.remove();
        t
    }

    fn excluded_packets(&self) -> Option<u64> {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut total = 0;
        for line in text.lines().filter(|l| l.contains("counter packets")) {
            let n = line.split("counter packets ").nth(1)?;
            total += n.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    }

    fn remove(&mut self) -> usize {
        if !self.table.is_empty() {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &self.table])
                .stderr(Stdio::null())
                .status();
            self.table.clear();
        }
        let moved = empty_cgroup(&self.cgroup);
        let _ = fs::remove_dir(&self.cgroup);
        moved
    }
}

impl Drop for Attribution {
    fn drop(&mut self) {
        self.remove();
    }
}

fn nft_load(rules: &str) -> Result<(), AttributionError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AttributionError::Nft(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(rules.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| AttributionError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let detail = String::from_utf8_lossy(&out.stderr);
        Err(AttributionError::Nft(
            detail.lines().next().unwrap_or("failed").trim().to_string(),
        ))
    }
}

/// Moves every process still in `cgroup` to conntrace's own cgroup, so
/// that it can be removed; returns how many there were.
fn empty_cgroup(cgroup: &Path) -> usize {
    let Ok(procs) = fs::read_to_string(cgroup.join("cgroup.procs")) else {
        return 0;
    };
    let pids: Vec<&str> = procs.lines().filter(|l| !l.is_empty()).collect();
    if pids.is_empty() {
        return 0;
    }
    let Some(home) = own_cgroup() else {
        return pids.len();
    };
    for pid in &pids {
        let _ = fs::write(home.join("cgroup.procs"), pid);
    }
    pids.len()
}

/// This process's cgroup directory in the v2 hierarchy.
fn own_cgroup() -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// Removes what audits killed before their end left behind: tables and
/// cgroups named after a process that no longer runs.
pub fn sweep_stale(mount: &Path) {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(pid) = line.trim().strip_prefix(&format!("table inet {NAME}")) {
                if !alive(pid) {
                    let _ = Command::new("nft")
                        .args(["delete", "table", "inet", &format!("{NAME}{pid}")])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
    if let Ok(dir) = fs::read_dir(mount) {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(NAME)) else {
                continue;
            };
            if !alive(pid) {
                empty_cgroup(&entry.path());
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
}

/// Whether anything an audit makes is left on this host: for tests and
/// `--help`'s promise. Lists the leftovers.
pub fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains(NAME) {
                found.push(line.trim().to_string());
            }
        }
    }
    if let Some(mount) = cgroup2_mount() {
        if let Ok(dir) = fs::read_dir(&mount) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with(NAME) {
                    found.push(entry.path().display().to_string());
                }
            }
        }
    }
    found
}

/// A conntrack label bit no running audit uses, whose NFLOG group no
/// process listens on (an audit that is ending may have removed its rules
/// and still hold its group for a moment).
fn free_label(pid: u32) -> u8 {
    let used: Vec<u8> = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split("ct label set ").nth(1))
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // One line per group bound, its number first.
    let bound: Vec<u16> = fs::read_to_string("/proc/net/netfilter/nfnetlink_log")
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let start = (pid % 128) as u8;
    (0..128u8)
        .map(|k| (start + k) % 128)
        .find(|&l| !used.contains(&l) && !bound.contains(&(NFLOG_BASE + u16::from(l))))
        .unwrap_or(start)
}

/// Where the cgroup v2 hierarchy is mounted (its root).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        // Field 4 is the mount's root within the hierarchy, 5 its place.
        let place = fields.get(4)?;
        (fields.get(3) == Some(&"/")).then(|| PathBuf::from(place))
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Who the command runs as: the user behind sudo, with their groups, unless
/// told to keep root.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub user: String,
}

impl Credentials {
    /// SUDO_UID, SUDO_GID and SUDO_USER's groups, when conntrace runs as
    /// root under sudo.
    pub fn of_sudo_user() -> Option<Credentials> {
        if !is_root() {
            return None;
        }
        let uid: libc::uid_t = std::env::var("SUDO_UID").ok()?.parse().ok()?;
        let gid: libc::gid_t = std::env::var("SUDO_GID").ok()?.parse().ok()?;
        if uid == 0 {
            return None;
        }
        let user = std::env::var("SUDO_USER").unwrap_or_default();
        let groups = group_list(&user, gid).unwrap_or_else(|| vec![gid]);
        Some(Credentials {
            uid,
            gid,
            groups,
            user,
        })
    }
}

fn group_list(user: &str, gid: libc::gid_t) -> Option<Vec<libc::gid_t>> {
    let name = CString::new(user).ok()?;
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let before = n;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at
        // most that many and sets `n` to the count it needs.
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n as usize);
            return Some(groups);
        }
        if n <= before {
            return None;
        }
    }
}

/// The command, ready to spawn: in the audit's cgroup (when there is one)
/// and as `credentials` (when given), entered between fork and exec.
pub fn command(
    argv: &[OsString],
    cgroup_procs: Option<std::os::fd::RawFd>,
    credentials: Option<&Credentials>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if let Some(c) = credentials {
        if let Ok(home) = home_of(c.uid) {
            cmd.env("HOME", home);
        }
        if !c.user.is_empty() {
            cmd.env("USER", &c.user).env("LOGNAME", &c.user);
        }
    }
    let creds = credentials.cloned();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes system calls (write, setgroups, setgid, setuid) on memory
    // prepared before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(c) = &creds {
                if libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0
                    || libc::setgid(c.gid) != 0
                    || libc::setuid(c.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

fn home_of(uid: libc::uid_t) -> Result<String, ()> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|_| ())?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 5 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
        })
        .ok_or(())
}

/// What to audit and how.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub argv: Vec<OsString>,
    /// After the command ends, wait at most this long for its connections
    /// to close.
    pub linger: std::time::Duration,
    /// Keep root for the command instead of the user behind sudo.
    pub as_root: bool,
    pub savefile: Option<PathBuf>,
    /// Where the command's packets cannot be told apart: capture these
    /// (BPF) on `interface` instead, and say the report may include others.
    pub fallback_filter: Option<String>,
    pub interface: String,
    pub pipeline: crate::pipeline::PipelineOptions,
}

/// Why an audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "cannot tell the command's packets from other processes': {0}; \
         rerun as root, or give --filter EXPR to capture by filter (the report \
         then may include other processes)"
    )]
    Attribution(AttributionError),
    #[error(transparent)]
    Capture(#[from] crate::live::capture::CaptureError),
    #[error("cannot run {command}: {source}")]
    Spawn { command: String, source: io::Error },
}

/// The report, and how the command ended.
#[derive(Debug)]
pub struct AuditOutcome {
    pub report: crate::report::Report,
    pub status: std::process::ExitStatus,
}

/// Runs the command under capture and reports its connections.
pub fn audit(
    config: &AuditConfig,
    rows: crate::live::watch::Rows,
) -> Result<AuditOutcome, AuditError> {
    use crate::live::capture::{CaptureConfig, LiveCapture, DEFAULT_BUFFER_SIZE};

    let attribution = match Attribution::set_up() {
        Ok(a) => Some(a),
        Err(e) => match &config.fallback_filter {
            Some(filter) => {
                eprintln!(
                    "conntrace audit: {e}; capturing `{filter}` on {} instead: the report may include other processes",
                    config.interface
                );
                None
            }
            None => return Err(AuditError::Attribution(e)),
        },
    };
    let cc = match &attribution {
        Some(a) => CaptureConfig {
            interface: a.interface(),
            // libpcap has no BPF for NFLOG; the rules chose the packets.
            filter: String::new(),
            savefile: config.savefile.clone(),
            buffer_size: DEFAULT_BUFFER_SIZE,
        },
        None => CaptureConfig {
            interface: config.interface.clone(),
            filter: config.fallback_filter.clone().unwrap_or_default(),
            savefile: config.savefile.clone(),
            buffer_size: DEFAULT_BUFFER_SIZE,
        },
    };
    let pipeline = rows.pipeline(&config.pipeline);
    let capture = LiveCapture::start(&cc, pipeline)?;
    let credentials = if config.as_root {
        None
    } else {
        Credentials::of_sudo_user()
    };
    let shown = shell_words(&config.argv);
    let announce = format!(
        "conntrace audit: {}; running {shown}{}",
        match &attribution {
            Some(a) => format!("capturing the command's packets only ({})", a.interface()),
            None => format!("capturing on {} ({})", cc.interface, cc.filter),
        },
        credentials
            .as_ref()
            .map_or_else(String::new, |c| format!(" as {}", c.user))
    );
    let mut cmd = command(
        &config.argv,
        attribution.as_ref().map(Attribution::procs_fd),
        credentials.as_ref(),
    );
    let ran = run_child(&mut cmd, &announce).map_err(|source| AuditError::Spawn {
        command: shown.clone(),
        source,
    });
    let (status, pid, interrupted) = match ran {
        Ok(r) => r,
        Err(e) => {
            let _ = capture.stop();
            return Err(e);
        }
    };
    let finished = capture.finish(config.linger);
    let teardown = attribution.map(Attribution::tear_down);
    let (mut pipeline, stats) = finished?;
    crate::live::capture::describe_source(&mut pipeline, &cc, &stats);
    let mut report = pipeline
        .finish()
        .map_err(|e| crate::live::capture::CaptureError::Read(e.to_string()))?;
    report.sockets = crate::live::watch::sockets_to_servers(&report);
    use std::os::unix::process::ExitStatusExt;
    report.audit = Some(crate::report::AuditReport {
        command: config
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        pid,
        exit_code: status.code(),
        signal: status.signal(),
        user: credentials.map(|c| c.user),
        attribution: if teardown.is_some() {
            "cgroup"
        } else {
            "filter"
        },
        may_include_other_processes: teardown.is_none(),
        excluded_packets: teardown.and_then(|t| t.excluded_packets),
        left_running: teardown.map_or(0, |t| t.left_running),
        interrupted,
    });
    Ok(AuditOutcome { report, status })
}

/// Spawns the command and waits for it. SIGTERM and SIGHUP sent to
/// conntrace are passed on to it; Ctrl-C at a terminal reaches it directly
/// (it shares conntrace's process group), so SIGINT is only noted.
fn run_child(
    cmd: &mut tokio::process::Command,
    announce: &str,
) -> io::Result<(std::process::ExitStatus, Option<u32>, bool)> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut child = cmd.spawn()?;
        // Said once the command runs (spawn returns after its exec), so a
        // Ctrl-C that follows reaches it, not a process still forking.
        eprintln!("{announce}");
        let pid = child.id();
        let pass = |sig: libc::c_int| {
            if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, sig) };
            }
        };
        let mut interrupted = false;
        loop {
            tokio::select! {
                status = child.wait() => {
                    // A Ctrl-C reaches the command and conntrace together:
                    // the command may be reaped before conntrace's own
                    // signal is read. Look for one a moment longer.
                    let late = async {
                        tokio::select! {
                            _ = int.recv() => {}
                            _ = term.recv() => {}
                            _ = hup.recv() => {}
                        }
                    };
                    if tokio::time::timeout(std::time::Duration::from_millis(50), late)
                        .await
                        .is_ok()
                    {
                        interrupted = true;
                    }
                    return Ok((status?, pid, interrupted));
                }
                _ = int.recv() => interrupted = true,
                _ = term.recv() => { interrupted = true; pass(libc::SIGTERM) }
                _ = hup.recv() => { interrupted = true; pass(libc::SIGHUP) }
            }
        }
    })
}

/// The command as a shell would show it.
pub fn shell_words<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.as_ref().to_string_lossy();
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
