//! Bytes per live session in the memory store, indexes included (DESIGN.md
//! §10: at most 320). Counts the heap through a counting global allocator, so
//! the figure is exact and independent of the machine's load.
//!
//! `cargo run --release --example memory_per_session [sessions] [per-user]`

use sessiongate::config::OnLimit;
use sessiongate::sessions::{CreateRequest, Limits, SessionStore};
use sessiongate::store::MemoryStore;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args.next().map_or(1_000_000, |s| s.parse().expect("sessions"));
    let per_user: usize = args.next().map_or(10, |s| s.parse().expect("per-user"));
    let limits = Limits {
        max_per_user: per_user as u32,
        idle_ttl_ms: 3_600_000,
        max_lifetime_ms: 86_400_000,
        on_limit: OnLimit::Reject,
        idempotency_ttl_ms: 86_400_000,
        max_idempotency_keys: 1000,
    };
    let tool_sets: Vec<Arc<str>> = ["general", "research", "coding"].into_iter().map(Arc::from).collect();
    let users: Vec<Arc<str>> =
        (0..sessions.div_ceil(per_user)).map(|u| Arc::from(format!("user-{u:08}"))).collect();
    let store = MemoryStore::new();
    let before = LIVE.load(Ordering::Relaxed);
    let now = 1_795_600_800_000;
    for n in 0..sessions {
        let req = CreateRequest {
            id: uuid::Uuid::now_v7(),
            user_id: users[n / per_user].clone(),
            tool_set: tool_sets[n % 3].clone(),
            now: now + n as i64,
            limits,
            idempotency: None,
        };
        store.create(req).await.expect("memory store");
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    // The user-id strings the test harness made are not the store's: it
    // copies each user id once, into its own index.
    println!(
        "{sessions} sessions, {per_user} per user: {} bytes of heap, {:.0} bytes per live session (indexes included)",
        used,
        used as f64 / sessions as f64
    );
}
