//! The fuzz targets' properties on stable, without cargo-fuzz: every seed of
//! `fuzz/corpus/<target>/`, a fixed set of mutants of each seed, and every
//! saved crash of `fuzz/regressions/<target>/` go through the same checks
//! as the libFuzzer targets (`fuzz/src/props/`, included here by path).
//! A new crash found by `scripts/fuzz.sh` is committed as a file in
//! `fuzz/regressions/<target>/` and is replayed from then on.

#[allow(dead_code)]
#[path = "../fuzz/src/props/mod.rs"]
mod props;

use std::path::{Path, PathBuf};

/// Mutants per seed: bit flips, byte insertions and deletions, truncations,
/// from a fixed xorshift sequence (the same on every run).
const MUTANTS_PER_SEED: usize = 48;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn mutants(seed: &[u8], salt: u64) -> Vec<Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..MUTANTS_PER_SEED)
        .map(|_| {
            let mut m = seed.to_vec();
            for _ in 0..=next() % 3 {
                let at = if m.is_empty() { 0 } else { next() as usize % m.len() };
                match next() % 4 {
                    0 if !m.is_empty() => m[at] ^= 1 << (next() % 8),
                    1 => m.insert(at, next() as u8),
                    2 if !m.is_empty() => {
                        m.remove(at);
                    }
                    _ => m.truncate(at),
                }
            }
            m
        })
        .collect()
}

/// Run `check` on every input of `target`; fail listing every input that
/// broke a property (each one's panic message is printed above).
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = files(&root.join("corpus").join(target));
    assert!(!seeds.is_empty(), "no seed corpus for {target}");
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, path) in seeds.iter().enumerate() {
        let seed = std::fs::read(path).expect("readable seed");
        for (j, m) in mutants(&seed, i as u64).into_iter().enumerate() {
            inputs.push((format!("{} (mutant {j})", path.display()), m));
        }
        inputs.push((path.display().to_string(), seed));
    }
    for path in files(&root.join("regressions").join(target)) {
        inputs.push((path.display().to_string(), std::fs::read(&path).expect("readable regression")));
    }
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| std::panic::catch_unwind(|| check(data)).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail:\n  {}",
        failed.len(),
        inputs.len(),
        failed.join("\n  ")
    );
}

#[test]
fn jwt_verify() {
    replay("jwt_verify", props::jwt::check);
}

#[test]
fn config_load() {
    replay("config_load", props::config::check);
}

#[test]
fn ratelimit_headers() {
    replay("ratelimit_headers", |data| {
        props::ratelimit::check(data);
    });
}
