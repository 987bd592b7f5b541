//! The properties the fuzz targets check, one module per target.
//!
//! Shared by two builds: the cargo-fuzz crate (`fuzz/`, libFuzzer, nightly
//! flags through `RUSTC_BOOTSTRAP`) and `tests/fuzz_regressions.rs`, which
//! includes this directory by `#[path]` and replays the seed corpus and every
//! saved crash on stable. So this code uses only what both can reach: std,
//! `sessiongate` and the crate's own dependencies (no `libfuzzer-sys`, no
//! `arbitrary`; structured inputs are decoded by [`Input`]).
//!
//! Every entry point takes the raw fuzz bytes and panics when a property
//! fails; the panic message says which.

pub mod config;
pub mod encoding;
pub mod jwt;
pub mod ratelimit;
pub mod sf;

/// A cursor over fuzz bytes for structured inputs: fixed-width reads,
/// little-endian, zeros once the bytes run out (so every input decodes, and
/// a short input means small values).
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub fn u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        let n = self.data.len().min(8);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        u64::from_le_bytes(buf)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.u64() % span,
            None => self.u64(),
        }
    }

    /// A length-prefixed string of at most `max` bytes (lossy UTF-8).
    pub fn string(&mut self, max: usize) -> String {
        let len = (self.byte() as usize).min(max).min(self.data.len());
        let (s, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// Split `data` at the first `sep` (the separator dropped); `None` without one.
pub fn split_at_byte(data: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}
