//! Shared by the live tests: they capture on loopback, which needs root (or the
//! capture capabilities). Without it they print a notice and pass.

#![allow(dead_code)]

/// Whether this process runs as root (effective uid 0).
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

/// Returns false (after a notice) when live capture cannot run here.
pub fn can_capture(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("skipping {test}: live capture needs root");
    false
}
