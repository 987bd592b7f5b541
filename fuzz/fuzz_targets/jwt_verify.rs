//! The credential entry: `Authorization` header, API key, bearer token, and
//! structured tokens signed with the secret. Properties: `src/props/jwt.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate_fuzz::props::jwt;

fuzz_target!(|data: &[u8]| jwt::check(data));
