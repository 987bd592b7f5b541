//! The cost of one RFC 3339 timestamp with milliseconds, ours
//! (`clock::Rfc3339`) against humantime's (`format_rfc3339_millis`), for the
//! performance guide's ledger: `valgrind --tool=callgrind` counts the whole
//! run; the difference between N and 0 timestamps, over N, is one's cost.
//! Not part of the product.
//!
//! `rfc3339_cost ours|humantime N`

use std::fmt::Write;
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().expect("ours or humantime");
    let n: i64 = args.next().and_then(|n| n.parse().ok()).expect("a count");
    let mut out = String::with_capacity(64);
    let mut total = 0usize;
    for i in 0..n {
        let ms = black_box(1_795_600_800_123 + i * 7_919);
        out.clear();
        match which.as_str() {
            "ours" => out.push_str(sessiongate::clock::Rfc3339::millis(ms).as_str()),
            "humantime" => {
                let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
                write!(out, "{}", humantime::format_rfc3339_millis(t)).unwrap();
            }
            other => panic!("{other}?"),
        }
        total += black_box(&out).len();
    }
    println!("{total}");
}
