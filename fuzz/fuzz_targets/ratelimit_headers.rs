//! The `RateLimit-Policy`, `RateLimit` and `Retry-After` values over the
//! sliding-window maths. Properties: `src/props/ratelimit.rs`; here the
//! header values are also read by the `sfv` crate (RFC 9651), a second,
//! independent parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate_fuzz::props::ratelimit;

fuzz_target!(|data: &[u8]| {
    let Some(headers) = ratelimit::check(data) else { return };
    for value in [&headers.policy, &headers.limit] {
        let list = sfv::Parser::new(value.as_str())
            .parse::<sfv::List>()
            .unwrap_or_else(|e| panic!("sfv refuses {value:?}: {e}"));
        assert!(!list.is_empty(), "{value:?}");
        for member in &list {
            let sfv::ListEntry::Item(item) = member else { panic!("an inner list in {value:?}") };
            assert!(matches!(item.bare_item, sfv::BareItem::String(_)), "{value:?}");
        }
    }
});
