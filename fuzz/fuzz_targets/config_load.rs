//! The config loader, `check-config`'s rendering and the runtime-config merge
//! patch. Properties: `src/props/config.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate_fuzz::props::config;

fuzz_target!(|data: &[u8]| config::check(data));
