//! The deadline for reading a request's head (`server.header_read_timeout`),
//! as hyper's `Timer`, without a tokio timer per request.
//!
//! hyper arms its header-read timeout each time it waits for a request head:
//! the first on a connection, and every next one on a kept-alive connection
//! (so an idle keep-alive connection is closed after the timeout too). With
//! tokio's timer that is, per request, an allocation, a clock read, and an
//! insertion into and removal from tokio's timer wheel under its lock. Here
//! the allocation and the clock read remain (hyper boxes every sleep and
//! computes its deadline), the wheel is gone (the gain as last measured:
//! `docs/performance.md#hand-written-fast-paths--ledger`). Each
//! connection's timer is ours:
//!
//! - A head's sleep, when hyper polls it, writes its deadline and hyper's
//!   waker into the connection's slot; dropping it (the head arrived) clears
//!   the slot. Both take the slot's own lock, which nobody else holds but the
//!   sweeper for an instant.
//! - One sweeper task per server ticks every `timeout / 8` (10 ms to 1 s),
//!   reads the clock, and wakes the connections whose deadline has passed.
//!   hyper then polls the sleep, finds it due by that reading, and closes
//!   the connection exactly as with its own timer.
//!
//! A deadline therefore fires between `timeout` and `timeout` plus a tick (an
//! eighth more) after hyper began waiting, never before; later only when the
//! runtime is too busy to run the sweeper on time.
//!
//! Because the slot sees hyper wait for each head, it can also tell the
//! shutdown whether a connection is still before its first request
//! (`HeadWatch`). Knows nothing of routes, requests or what is served.

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One server's head deadlines: hands out a timer per connection and runs
/// the sweeper while any of them (or this) is alive.
pub struct HeadDeadlines {
    shared: Arc<Shared>,
}

struct Shared {
    base: Instant,
    /// Milliseconds since `base`, as of the sweeper's last tick: a sleep is
    /// due when this has reached its deadline.
    now_ms: AtomicU64,
    /// Every connection's slot; dead ones are dropped by the sweeper.
    slots: Mutex<Vec<Weak<Slot>>>,
}

/// What the connection's current head sleep waits for: its id (a connection
/// makes one sleep per head), its deadline in the shared clock's
/// milliseconds, and hyper's waker.
#[derive(Default)]
struct Slot {
    armed: Mutex<Option<(u64, u64, Waker)>>,
    next_id: AtomicU64,
}

impl HeadDeadlines {
    /// Starts the sweeper (inside a tokio runtime). It ends by itself once
    /// this and every timer it handed out are dropped.
    pub fn start(timeout: Duration) -> Self {
        let tick = (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let shared = Arc::new(Shared {
            base: Instant::now(),
            now_ms: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&shared), tick));
        Self { shared }
    }

    /// hyper's timer for one more connection.
    pub fn connection(&self) -> ConnectionTimer {
        let slot = Arc::new(Slot::default());
        self.shared.slots.lock().push(Arc::downgrade(&slot));
        ConnectionTimer { shared: self.shared.clone(), slot }
    }
}

async fn sweep(shared: Weak<Shared>, tick: Duration) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due = Vec::new();
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let now = shared.base.elapsed().as_millis() as u64;
        shared.now_ms.store(now, Ordering::Relaxed);
        let mut slots = shared.slots.lock();
        slots.retain(|slot| {
            let Some(slot) = slot.upgrade() else { return false };
            if let Some((_, deadline, waker)) = &*slot.armed.lock()
                && *deadline <= now
            {
                due.push(waker.clone());
            }
            true
        });
        // After a flood of connections, give the room back.
        if slots.capacity() > 64 && slots.len() < slots.capacity() / 4 {
            let keep = slots.len() * 2;
            slots.shrink_to(keep);
        }
        drop(slots);
        // Woken outside the locks: hyper polls the sleep, which is now due.
        due.drain(..).for_each(Waker::wake);
    }
}

/// hyper's `Timer` for one connection (see the module note).
pub struct ConnectionTimer {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl ConnectionTimer {
    /// What the connection is doing, as its timer sees it (for shutdown).
    pub fn watch(&self) -> HeadWatch {
        HeadWatch(self.slot.clone())
    }
}

/// Whether a connection is still waiting for its first request.
pub struct HeadWatch(Arc<Slot>);

impl HeadWatch {
    /// True until hyper has read the connection's first request head: before
    /// hyper has begun, and while it waits for that head (or the rest of
    /// it). Then nothing was asked and nothing is owed; hyper's graceful
    /// shutdown would still wait for the head (a connection starts "busy"),
    /// up to `header_read_timeout`.
    pub fn awaiting_first_request(&self) -> bool {
        let armed = self.0.armed.lock();
        match self.0.next_id.load(Ordering::Relaxed) {
            0 => true,
            1 => armed.as_ref().is_some_and(|(id, _, _)| *id == 0),
            _ => false,
        }
    }
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // In whole milliseconds, rounded up: never early.
        let since_base = deadline.saturating_duration_since(self.shared.base);
        Box::pin(HeadSleep {
            id: self.slot.next_id.fetch_add(1, Ordering::Relaxed),
            deadline_ms: since_base.as_micros().div_ceil(1000) as u64,
            shared: self.shared.clone(),
            slot: self.slot.clone(),
        })
    }
}

struct HeadSleep {
    id: u64,
    deadline_ms: u64,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.now_ms.load(Ordering::Relaxed) >= self.deadline_ms {
            return Poll::Ready(());
        }
        let mut armed = self.slot.armed.lock();
        match &mut *armed {
            Some((id, _, waker)) if *id == self.id && waker.will_wake(cx.waker()) => {}
            other => *other = Some((self.id, self.deadline_ms, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        let mut armed = self.slot.armed.lock();
        if armed.as_ref().is_some_and(|(id, _, _)| *id == self.id) {
            *armed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn a_sleep_fires_after_its_deadline_never_before() {
        let deadlines = HeadDeadlines::start(Duration::from_millis(200));
        let timer = deadlines.connection();
        let started = Instant::now();
        let sleep = timer.sleep(Duration::from_millis(200));
        sleep.await;
        let waited = started.elapsed();
        // Never before the deadline; after it by a tick of 25 ms on an idle
        // machine. The upper bound only guards against a sleep that never
        // fires: a loaded machine may run the sweep late.
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn a_dropped_sleep_disarms_its_slot_and_a_newer_one_is_not_disarmed_by_an_older() {
        let deadlines = HeadDeadlines::start(Duration::from_secs(8));
        let timer = deadlines.connection();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = timer.sleep(Duration::from_secs(60));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(timer.slot.armed.lock().is_some());
        let mut second = timer.sleep(Duration::from_secs(60));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert!(timer.slot.armed.lock().is_some(), "the newer sleep is still armed");
        drop(second);
        assert!(timer.slot.armed.lock().is_none());
    }

    #[tokio::test]
    async fn the_watch_sees_a_connection_await_its_first_request_and_no_later() {
        let deadlines = HeadDeadlines::start(Duration::from_secs(8));
        let timer = deadlines.connection();
        let watch = timer.watch();
        assert!(watch.awaiting_first_request(), "before hyper has begun");
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = timer.sleep(Duration::from_secs(8));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(watch.awaiting_first_request(), "waiting for the first head");
        drop(first);
        assert!(!watch.awaiting_first_request(), "the first request is in flight");
        let mut next = timer.sleep(Duration::from_secs(8));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert!(!watch.awaiting_first_request(), "a kept-alive connection: hyper's own shutdown closes it");
    }

    #[tokio::test]
    async fn the_sweeper_forgets_closed_connections_and_ends_with_its_server() {
        let deadlines = HeadDeadlines::start(Duration::from_millis(80));
        let kept = deadlines.connection();
        drop(deadlines.connection());
        let flood: Vec<_> = (0..1000).map(|_| deadlines.connection()).collect();
        drop(flood);
        // A sweep runs every tick; wait for one, however late it runs.
        let started = Instant::now();
        while kept.shared.slots.lock().len() > 1 && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(kept.shared.slots.lock().len(), 1);
        assert!(kept.shared.slots.lock().capacity() <= 64, "the flood's room is given back");
        let shared = Arc::downgrade(&kept.shared);
        drop((deadlines, kept));
        assert!(shared.upgrade().is_none(), "nothing holds the shared state but the timers");
    }
}
