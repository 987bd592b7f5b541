//! Where log lines go: appended to a shared buffer that a background thread
//! writes to stdout in batches.
//!
//! `tracing-appender`'s non-blocking writer (what this replaces) sends every
//! line through a channel, which wakes the writer thread and costs a `write`
//! system call per line: with one access-log line per request, a futex wake
//! and a write per request. Here a request pays for a short lock and a copy;
//! the writer thread is woken once per batch (when a line lands in an empty
//! buffer), waits `BATCH_WINDOW` for more, and writes them all at once.
//!
//! Lines are not dropped while the writer thread runs. When stdout cannot keep
//! up and the buffer reaches `MAX_BUFFERED` bytes, writers wait for the
//! background thread (the same back-pressure as a blocking channel). While
//! stdout keeps up, a line reaches it at most `BATCH_WINDOW` (plus the write
//! in progress) after it was logged. `LogWriterGuard` flushes the rest when
//! dropped (at the end of `main`), waiting at most `SHUTDOWN_WAIT`: a stdout
//! nobody reads must not keep the process from exiting. Once the thread has
//! stopped (shut down, or died), writers never wait, and lines past
//! `MAX_BUFFERED` are dropped.
//!
//! Knows nothing of the line format (see `log_format`).

use parking_lot::{Condvar, Mutex};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

/// How long the writer thread gathers lines after the first of a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Buffered bytes at which writers wait for the writer thread.
pub const MAX_BUFFERED: usize = 4 << 20;
/// How long dropping the guard waits for the last batch to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a line lands in an empty buffer, or at close.
    work: Condvar,
    /// Signalled when the writer thread has taken a batch.
    room: Condvar,
}

/// A `MakeWriter` for `tracing_subscriber::fmt`: cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Flushes and stops the writer thread when dropped.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Disconnected when the writer thread has ended (normally or not).
    ended: std::sync::mpsc::Receiver<()>,
}

/// Held by the writer thread: when it ends, however it ends, writers stop
/// waiting for it and the guard stops waiting too.
struct EndOfThread {
    shared: Arc<Shared>,
    _ended: std::sync::mpsc::Sender<()>,
}

impl Drop for EndOfThread {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.room.notify_all();
    }
}

/// A writer to `out` and the guard that owns its thread.
pub fn batch_writer<W: Write + Send + 'static>(out: W) -> (BatchWriter, LogWriterGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { buf: Vec::with_capacity(64 << 10), closed: false }),
        work: Condvar::new(),
        room: Condvar::new(),
    });
    let (ended_tx, ended) = std::sync::mpsc::channel();
    let end = EndOfThread { shared: shared.clone(), _ended: ended_tx };
    let thread = std::thread::Builder::new()
        .name("sessiongate-log".into())
        .spawn(move || {
            let end = end;
            run(&end.shared, out);
        })
        .expect("the log writer thread starts");
    (BatchWriter { shared: shared.clone() }, LogWriterGuard { shared, thread: Some(thread), ended })
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::with_capacity(64 << 10);
    loop {
        let closed = {
            let mut state = shared.state.lock();
            while state.buf.is_empty() && !state.closed {
                shared.work.wait(&mut state);
            }
            state.closed
        };
        if !closed {
            std::thread::sleep(BATCH_WINDOW);
        }
        {
            let mut state = shared.state.lock();
            std::mem::swap(&mut state.buf, &mut batch);
        }
        shared.room.notify_all();
        // A failed write (stdout closed) loses the batch, never blocks the service.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > MAX_BUFFERED {
            batch.shrink_to(64 << 10);
        }
        if closed && shared.state.lock().buf.is_empty() {
            return;
        }
    }
}

impl BatchWriter {
    /// Append whole lines (what `Write::write` does, without a clone).
    pub fn write_line(&self, line: &[u8]) {
        self.append(line);
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.shared.state.lock();
        while state.buf.len() >= MAX_BUFFERED && !state.closed {
            self.shared.room.wait(&mut state);
        }
        if state.closed && state.buf.len() >= MAX_BUFFERED {
            // Nobody will write it: bounded, not kept.
            return;
        }
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        drop(state);
        if was_empty {
            self.shared.work.notify_one();
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.work.notify_one();
        self.shared.room.notify_all();
        // Wait for the last batch, but not forever: a stdout nobody reads
        // would block the write, and with it the exit.
        if let Some(t) = self.thread.take()
            && !matches!(
                self.ended.recv_timeout(SHUTDOWN_WAIT),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            )
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A `Write` whose bytes and number of writes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<StdMutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(b);
            s.1 += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_once_in_order_and_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..5_000 {
                        w.write_all(format!("{t} {n}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let (t, n) = line.split_once(' ').unwrap();
            let (t, n): (usize, i32) = (t.parse().unwrap(), n.parse().unwrap());
            assert_eq!(n, next[t], "thread {t}'s lines in order, none lost or repeated");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
        assert!(writes < 20_000 / 10, "{writes} writes for 20000 lines");
    }

    #[test]
    fn a_line_is_written_within_the_batch_window_without_a_flush() {
        let sink = Sink::default();
        let (mut writer, _guard) = batch_writer(sink.clone());
        writer.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"one\n");
    }

    #[test]
    fn a_stdout_nobody_reads_delays_shutdown_by_at_most_the_wait() {
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                unreachable!()
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut writer, guard) = batch_writer(Stuck);
        writer.write_all(b"never written\n").unwrap();
        std::thread::sleep(BATCH_WINDOW * 3);
        let started = std::time::Instant::now();
        drop(guard);
        let took = started.elapsed();
        assert!(took >= SHUTDOWN_WAIT && took < SHUTDOWN_WAIT * 3, "{took:?}");
        // Writers are not held back by a thread that will never take a batch.
        for _ in 0..(MAX_BUFFERED / 1024 + 10) {
            writer.write_all(&[b'x'; 1024]).unwrap();
        }
        assert!(writer.shared.state.lock().buf.len() <= MAX_BUFFERED + 1024);
    }

    #[test]
    fn a_slow_output_holds_writers_back_instead_of_growing_or_dropping() {
        #[derive(Clone)]
        struct Slow(Arc<StdMutex<usize>>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                *self.0.lock().unwrap() += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let written = Arc::new(StdMutex::new(0));
        let (mut writer, guard) = batch_writer(Slow(written.clone()));
        let line = vec![b'x'; 64 << 10];
        for _ in 0..200 {
            writer.write_all(&line).unwrap();
            let buffered = writer.shared.state.lock().buf.len();
            assert!(buffered <= MAX_BUFFERED + line.len(), "{buffered} bytes buffered");
        }
        drop(guard);
        assert_eq!(*written.lock().unwrap(), 200 * line.len());
    }
}
