//! The fuzz targets' bodies (`conntrace::fuzzing`), run on stable over their
//! seed inputs: the generated seeds, seeds derived from every fixture and
//! from the shared corpus when it is there, and every input saved under
//! `fuzz/regressions/<target>/`. A crash the fuzzer once found fails here,
//! as does a broken invariant the targets assert.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use conntrace::fuzzing::{generated_seeds, seeds, Target, TARGETS};

use crate::common;

/// Bytes of a capture a seed keeps: the start of a large capture exercises
/// the same code as the whole (cut short at its end), in far less time.
const MAX_CAPTURE_BYTES: usize = 256 << 10;

/// Seeds derived from one capture, at most; spread over the capture.
const MAX_SEEDS_PER_CAPTURE: usize = 24;

fn regressions_dir() -> PathBuf {
    common::root().join("fuzz/regressions")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Every input of `target`, each with a name to report it by.
fn inputs(target: &Target) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = generated_seeds(target.name)
        .into_iter()
        .enumerate()
        .map(|(i, seed)| (format!("generated #{i}"), seed))
        .collect();
    let mut captures = common::fixtures();
    captures.extend(common::corpus_dir().map_or_else(Vec::new, |d| common::captures_under(&d)));
    for capture in captures {
        let mut bytes = std::fs::read(&capture).unwrap();
        bytes.truncate(MAX_CAPTURE_BYTES);
        let derived = seeds(target.name, &bytes);
        let step = derived.len().div_ceil(MAX_SEEDS_PER_CAPTURE).max(1);
        for (i, seed) in derived.into_iter().enumerate().step_by(step) {
            out.push((format!("{} #{i}", capture.display()), seed));
        }
    }
    for file in files_in(&regressions_dir().join(target.name)) {
        out.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    out
}

fn run_target(name: &str) {
    let target = TARGETS.iter().find(|t| t.name == name).unwrap();
    let inputs = inputs(target);
    eprintln!("{name}: {} inputs", inputs.len());
    let mut failed = Vec::new();
    for (input, bytes) in &inputs {
        if catch_unwind(AssertUnwindSafe(|| (target.run)(bytes))).is_err() {
            failed.push(input.as_str());
        }
    }
    assert!(
        failed.is_empty(),
        "{name} failed on {} of {} inputs: {failed:#?}",
        failed.len(),
        inputs.len()
    );
    // Each target has its generated seeds, and fixtures to derive from.
    let least = if matches!(name, "tracker" | "reassembly") {
        8
    } else {
        common::fixtures().len()
    };
    assert!(
        inputs.len() >= least,
        "{name}: only {} inputs",
        inputs.len()
    );
}

macro_rules! seed_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_target(stringify!($name));
            }
        )*

        #[test]
        fn every_target_is_tested_here() {
            let here = [$(stringify!($name)),*];
            let all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            assert_eq!(here.as_slice(), all.as_slice());
        }
    };
}

seed_tests!(
    capture_reader,
    decode,
    tracker,
    reassembly,
    http1,
    h2_frames,
    tls_hello,
    http_analyzer,
    pipeline,
);

/// A regression saved under a misspelt target's folder would never run.
#[test]
fn regressions_are_filed_under_known_targets() {
    for dir in std::fs::read_dir(regressions_dir()).into_iter().flatten() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|t| t.name == name),
            "fuzz/regressions/{name} is not a fuzz target"
        );
    }
}

/// Each fuzz target of the cargo-fuzz crate is one of the library's.
#[test]
fn cargo_fuzz_targets_match_the_library() {
    let mut files: Vec<String> = files_in(&common::root().join("fuzz/fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(files, names);
}
