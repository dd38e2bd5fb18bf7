//! Writes the fuzz targets' seed corpora: `fuzz_seeds OUT CAPTURE_OR_DIR...`
//! puts, for every target, its generated seeds and the seeds derived from
//! each capture (`conntrace::fuzzing::seeds`) in `OUT/<target>/`, each named
//! by a hash of its bytes, so that seeding twice adds nothing. The captures
//! are read where they are. `fuzz_seeds --list` prints the targets' names.

use std::path::{Path, PathBuf};

use conntrace::fuzzing::{generated_seeds, seeds, TARGETS};

/// Bytes of a capture a seed keeps; libFuzzer mutates large inputs slowly.
const MAX_CAPTURE_BYTES: usize = 128 << 10;

/// Seeds derived from one capture for one target, at most.
const MAX_SEEDS_PER_CAPTURE: usize = 64;

fn main() -> std::io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.first().is_some_and(|a| a == Path::new("--list")) {
        for t in TARGETS {
            println!("{}", t.name);
        }
        return Ok(());
    }
    let Some((out, inputs)) = args.split_first() else {
        eprintln!("usage: fuzz_seeds OUT CAPTURE_OR_DIR... | fuzz_seeds --list");
        std::process::exit(2);
    };
    let mut captures = Vec::new();
    for input in inputs {
        collect(input, &mut captures);
    }
    captures.sort();
    for target in TARGETS {
        let dir = out.join(target.name);
        std::fs::create_dir_all(&dir)?;
        let mut all = generated_seeds(target.name);
        for capture in &captures {
            let mut bytes = std::fs::read(capture)?;
            bytes.truncate(MAX_CAPTURE_BYTES);
            let derived = seeds(target.name, &bytes);
            let step = derived.len().div_ceil(MAX_SEEDS_PER_CAPTURE).max(1);
            all.extend(derived.into_iter().step_by(step));
        }
        for seed in &all {
            std::fs::write(dir.join(format!("seed-{:016x}", fnv1a(seed))), seed)?;
        }
        println!(
            "{:>16}: {} seeds from {} captures",
            target.name,
            all.len(),
            captures.len()
        );
    }
    Ok(())
}

/// Capture files at or below `path`.
fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            collect(&entry.path(), out);
        }
        return;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".gz").unwrap_or(name);
    if [".pcap", ".pcapng", ".cap"]
        .iter()
        .any(|ext| name.ends_with(ext))
    {
        out.push(path.to_path_buf());
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
