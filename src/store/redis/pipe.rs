//! Our own connection to a single Redis node: one TCP connection shared by
//! every request, commands pipelined on it in the order they were queued and
//! replies handed back in that order.
//!
//! Why not redis-rs's `ConnectionManager` (the Cluster router, `cluster.rs`,
//! runs one of these per node): its multiplexer parses replies with its
//! `combine` parser, and copies every command into a message of its own for
//! a channel to a driver task (what that cost, as last measured:
//! `docs/performance.md#hand-written-fast-paths--ledger`). Here a command
//! is written straight into the connection's one output buffer under one
//! lock, with a oneshot for its reply; one I/O task writes whatever has
//! queued up in one write and parses the replies by hand (RESP2: the five
//! kinds of reply below). Why by hand: the `redis-protocol` crate's parser
//! costs more per request (the ledger, and `loadtest/ab/resp-parser.patch`
//! to measure it again); it is the reference the tests hold ours to.
//!
//! - Speaks RESP2; sends `AUTH` and `SELECT` from the URL on every connect.
//! - Connects on the first command and again on the first command after the
//!   connection failed, one attempt at a time; for `RETRY_PAUSE` after a
//!   failed attempt, commands fail at once with its error.
//! - A failed connection fails every command waiting on it with an I/O error
//!   (so `Redis::observe` counts Redis as unavailable), and so does an I/O
//!   task that ends any other way. A peer that vanished without closing the
//!   connection is found by TCP keepalive and `TCP_USER_TIMEOUT` (`tune`).
//! - The I/O task yields once before writing what was queued, so that the
//!   requests ready to run add their commands to the same write.
//!
//! Must not know: what the commands mean (callers build `redis::Cmd`s and
//! read `redis::Value`s) or how long a command may take (the caller bounds
//! every call; a caller that gives up leaves its reply to be read and
//! dropped, so the order of replies is never lost).

use redis::aio::ConnectionLike;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, ProtocolVersion, RedisError, RedisFuture, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

/// After a failed connect, how long commands fail at once instead of trying
/// again (Redis is down: answer 503 quickly, and do not hammer it).
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The read buffer's first size; it grows for a reply that does not fit.
const READ_BUFFER: usize = 16 * 1024;
/// Arrays nest this deep at most (sessiongate's replies nest one level).
const MAX_DEPTH: u8 = 8;
/// Redis's own limit on a string (`proto-max-bulk-len`'s default).
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Commands queued or waiting for replies at most: past it (Redis hung
/// under load), commands fail at once instead of piling up.
const MAX_WAITING: usize = 100_000;

pub struct Pipe {
    shared: Arc<Shared>,
    host: String,
    port: u16,
    /// `AUTH` and `SELECT`, packed, and how many replies they get.
    hello: (Vec<u8>, usize),
    db: i64,
    /// Held while connecting; the last failed attempt, for `RETRY_PAUSE`.
    connecting: tokio::sync::Mutex<Option<(Instant, RedisError)>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A connection is up and its I/O task takes commands.
    open: bool,
    /// Which connection is (or was last) open: an I/O task closes only its own.
    generation: u64,
    /// Commands queued and not yet taken by the I/O task.
    out: Vec<u8>,
    /// One per command (or pipeline) sent or queued, oldest first.
    waiting: VecDeque<Waiter>,
    /// The I/O task's waker, while it has taken everything queued: the
    /// first caller to queue something after that takes it and wakes it.
    waker: Option<Waker>,
    task: Option<tokio::task::AbortHandle>,
}

enum Waiter {
    One(oneshot::Sender<Result<Value, RedisError>>),
    /// A pipeline: `skip` replies dropped, then `keep` collected.
    Many {
        skip: usize,
        keep: usize,
        got: Vec<Value>,
        tx: oneshot::Sender<Result<Vec<Value>, RedisError>>,
    },
}

impl Waiter {
    fn fail(self, e: &io::Error) {
        let e = || RedisError::from(io::Error::new(e.kind(), e.to_string()));
        match self {
            Waiter::One(tx) => drop(tx.send(Err(e()))),
            Waiter::Many { tx, .. } => drop(tx.send(Err(e()))),
        }
    }
}

enum Queued {
    /// No connection is open: the waiter back, to queue after connecting.
    Closed(Waiter),
    Full,
}

fn full() -> RedisError {
    io::Error::new(io::ErrorKind::TimedOut, "too many commands are waiting for redis").into()
}

fn lost() -> RedisError {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the connection to redis was lost").into()
}

impl Pipe {
    /// A connection to the node of `info` (not made until the first command).
    pub fn new(info: &ConnectionInfo) -> anyhow::Result<Self> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            anyhow::bail!("only redis:// addresses are supported (no TLS)");
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            anyhow::bail!("only RESP2 is supported: leave out `protocol=resp3`");
        }
        let (mut hello, mut replies) = (Vec::new(), 0);
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password).write_packed_command(&mut hello);
            replies += 1;
        }
        if settings.db() != 0 {
            redis::cmd("SELECT").arg(settings.db()).write_packed_command(&mut hello);
            replies += 1;
        }
        Ok(Self {
            shared: Arc::default(),
            host: host.clone(),
            port: *port,
            hello: (hello, replies),
            db: settings.db(),
            connecting: tokio::sync::Mutex::new(None),
        })
    }

    /// Send one command and wait for its reply (a server error is a
    /// `Value::ServerError`, as redis-rs's connections give it).
    pub async fn request(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let (tx, rx) = oneshot::channel();
        self.send(|out| cmd.write_packed_command(out), Waiter::One(tx)).await?;
        rx.await.unwrap_or_else(|_| Err(lost()))
    }

    /// Send a pipeline's commands and collect `count` replies after `offset`.
    pub async fn request_many(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        if offset + count == 0 {
            return Ok(Vec::new()); // nothing sent, nothing to wait for
        }
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::Many { skip: offset, keep: count, got: Vec::with_capacity(count), tx };
        self.send(|out| out.extend_from_slice(&pipeline.get_packed_pipeline()), waiter).await?;
        rx.await.unwrap_or_else(|_| Err(lost()))
    }

    async fn send(&self, write: impl Fn(&mut Vec<u8>), waiter: Waiter) -> Result<(), RedisError> {
        let waiter = match self.queue(&write, waiter) {
            Ok(()) => return Ok(()),
            Err(Queued::Closed(waiter)) => waiter,
            Err(Queued::Full) => return Err(full()),
        };
        self.connect().await?;
        match self.queue(&write, waiter) {
            Ok(()) => Ok(()),
            Err(Queued::Closed(_)) => Err(lost()),
            Err(Queued::Full) => Err(full()),
        }
    }

    /// Queue a command on the open connection.
    fn queue(&self, write: &impl Fn(&mut Vec<u8>), waiter: Waiter) -> Result<(), Queued> {
        let mut state = self.shared.state.lock().expect("redis pipe lock");
        if !state.open {
            return Err(Queued::Closed(waiter));
        }
        if state.waiting.len() >= MAX_WAITING {
            return Err(Queued::Full);
        }
        write(&mut state.out);
        state.waiting.push_back(waiter);
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    async fn connect(&self) -> Result<(), RedisError> {
        let mut last = self.connecting.lock().await;
        if self.shared.state.lock().expect("redis pipe lock").open {
            return Ok(());
        }
        if let Some((at, e)) = &*last
            && at.elapsed() < RETRY_PAUSE
        {
            return Err(e.clone());
        }
        // An attempt its caller gives up on (a connect or a greeting that
        // hangs) counts as failed too: the callers behind it fail at once
        // for the pause instead of each waiting out a hung attempt of its own.
        let attempt = Attempt(Some(&mut last));
        let opened = match tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await {
            Ok(stream) => match tune(&stream) {
                Ok(()) => self.open(stream).await,
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        };
        attempt.end(&opened);
        opened
    }

    /// Greet Redis on a new stream (`AUTH`, `SELECT`) and hand the stream to
    /// a new I/O task.
    async fn open<S>(&self, mut stream: S) -> Result<(), RedisError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (hello, replies) = &self.hello;
        let mut buf = Vec::new();
        let mut pos = 0;
        if *replies > 0 {
            stream.write_all(hello).await?;
            for _ in 0..*replies {
                let value = loop {
                    let mut start = pos;
                    if let Some(v) = parse(&buf, &mut start, 0)? {
                        pos = start;
                        break v;
                    }
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                };
                // A refused greeting (WRONGPASS, NOAUTH, a bad SELECT) is a
                // connection that cannot be had: Redis is unavailable to us.
                if let Err(e) = value.extract_error() {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()).into());
                }
            }
        }
        let mut state = self.shared.state.lock().expect("redis pipe lock");
        state.generation += 1;
        let io = Io::new(stream, self.shared.clone(), state.generation, buf.split_off(pos));
        state.out.clear();
        state.open = true;
        state.task = Some(tokio::spawn(io).abort_handle());
        Ok(())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = state.task.take() {
            task.abort();
        }
        let closed = io::Error::new(io::ErrorKind::ConnectionAborted, "the redis connection was closed");
        close(&mut state, &closed);
    }
}

/// Mark the connection closed and fail everyone waiting on it.
fn close(state: &mut State, e: &io::Error) {
    state.open = false;
    state.out.clear();
    state.waker = None;
    for waiter in state.waiting.drain(..) {
        waiter.fail(e);
    }
}

/// Records a connect attempt's failure, also when its caller drops it.
struct Attempt<'a, 'b>(Option<&'a mut tokio::sync::MutexGuard<'b, Option<(Instant, RedisError)>>>);

impl Attempt<'_, '_> {
    fn end(mut self, result: &Result<(), RedisError>) {
        if let Some(last) = self.0.take() {
            **last = result.as_ref().err().map(|e| (Instant::now(), e.clone()));
        }
    }
}

impl Drop for Attempt<'_, '_> {
    fn drop(&mut self) {
        if let Some(last) = self.0.take() {
            let e = io::Error::new(io::ErrorKind::TimedOut, "connecting to redis took too long");
            **last = Some((Instant::now(), e.into()));
        }
    }
}

/// No Nagle delay (commands are written whole), and a dead peer noticed:
/// keepalive probes on an idle connection, and a bound on how long sent
/// data may go unacknowledged (a host that vanished, a network split). A
/// Redis that is slow or paused still acknowledges at the TCP level, and is
/// waited for.
fn tune(stream: &tokio::net::TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(Duration::from_secs(10)))
}

/// `&Pipe` as a redis-rs connection, so `Cmd::query_async` and
/// `Script::load_async` run on it.
pub struct PipeRef<'a>(pub &'a Pipe);

impl ConnectionLike for PipeRef<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.0.request(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.0.request_many(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

/// The I/O task of one connection: writes what is queued, reads replies and
/// hands each to the oldest waiter; ends when the connection fails.
struct Io<S> {
    stream: S,
    shared: Arc<Shared>,
    generation: u64,
    /// Taken from `State::out`, written from `written` on.
    write: Vec<u8>,
    written: usize,
    /// Read from Redis: `read[parsed..filled]` is not yet parsed.
    read: Vec<u8>,
    parsed: usize,
    filled: usize,
    /// New commands were found and the task yielded once before writing
    /// them (see `run`).
    yielded: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S, shared: Arc<Shared>, generation: u64, mut read: Vec<u8>) -> Self {
        let filled = read.len();
        read.resize(READ_BUFFER.max(2 * filled), 0);
        Self {
            stream,
            shared,
            generation,
            write: Vec::new(),
            written: 0,
            read,
            parsed: 0,
            filled,
            yielded: false,
        }
    }

    /// Make every step that can be made now; `Ok` once none can (each
    /// pending step has registered the waker).
    fn run(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // New commands are written on the task's next turn, not this one:
        // the tasks already ready to run (under load, other requests about
        // to send theirs) go first, and one write carries them all. A write
        // costs the same system time for one command as for thirty.
        let mut hold = false;
        loop {
            let mut moved = false;
            if self.written == self.write.len() && !hold {
                self.write.clear();
                self.written = 0;
                let mut state = self.shared.state.lock().expect("redis pipe lock");
                if !state.out.is_empty() && !self.yielded {
                    // No waker left in `state`: callers need not wake us.
                    (self.yielded, hold) = (true, true);
                    drop(state);
                    cx.waker().wake_by_ref();
                } else {
                    self.yielded = false;
                    std::mem::swap(&mut self.write, &mut state.out);
                    if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        state.waker = Some(cx.waker().clone());
                    }
                }
            }
            while self.written < self.write.len() {
                match Pin::new(&mut self.stream).poll_write(cx, &self.write[self.written..]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            if self.filled == self.read.len() {
                let grown = 2 * self.read.len();
                self.read.resize(grown, 0);
            }
            let mut buf = ReadBuf::new(&mut self.read[self.filled..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"));
                }
                Poll::Ready(Ok(())) => {
                    self.filled += buf.filled().len();
                    self.deliver()?;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// Hand every complete reply read so far to its waiter.
    fn deliver(&mut self) -> io::Result<()> {
        loop {
            let mut end = self.parsed;
            let Some(value) = parse(&self.read[..self.filled], &mut end, 0)? else { break };
            self.parsed = end;
            let mut state = self.shared.state.lock().expect("redis pipe lock");
            let Some(waiter) = state.waiting.front_mut() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "redis sent a reply nobody asked for",
                ));
            };
            // The reply that completes the waiter (a pipeline's are in `got`).
            let done = match waiter {
                Waiter::One(_) => Some(value),
                Waiter::Many { skip, keep, got, .. } => {
                    if *skip > 0 {
                        *skip -= 1;
                    } else {
                        got.push(value);
                    }
                    (got.len() == *keep && *skip == 0).then_some(Value::Nil)
                }
            };
            if let Some(value) = done {
                let waiter = state.waiting.pop_front().expect("the front waiter");
                drop(state);
                // A caller that gave up has dropped its receiver: its reply is dropped here.
                match waiter {
                    Waiter::One(tx) => drop(tx.send(Ok(value))),
                    Waiter::Many { got, tx, .. } => drop(tx.send(Ok(got))),
                }
            }
        }
        if self.parsed == self.filled {
            (self.parsed, self.filled) = (0, 0);
            if self.read.len() > READ_BUFFER {
                // Grown for one large reply: back to the usual size.
                self.read.truncate(READ_BUFFER);
                self.read.shrink_to_fit();
            }
        } else if self.parsed > self.read.len() / 2 {
            self.read.copy_within(self.parsed..self.filled, 0);
            (self.parsed, self.filled) = (0, self.filled - self.parsed);
        }
        Ok(())
    }
}

impl<S> Io<S> {
    /// Close this task's connection, unless a newer one has replaced it.
    fn close(&self, e: &io::Error) {
        let mut state = self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.generation == self.generation && state.open {
            close(&mut state, e);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Io<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.run(cx) {
            Ok(()) => Poll::Pending,
            Err(e) => {
                tracing::debug!(error = %e, "redis connection failed");
                this.close(&e);
                Poll::Ready(())
            }
        }
    }
}

/// A task that ends any other way (aborted, or a panic) leaves no one
/// waiting on a connection nobody serves.
impl<S> Drop for Io<S> {
    fn drop(&mut self) {
        self.close(&io::Error::new(io::ErrorKind::ConnectionAborted, "the redis connection ended"));
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis sent an invalid reply: {what}"))
}

/// The integer of a reply's first line.
fn integer(line: &[u8]) -> io::Result<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(invalid("an integer"));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(invalid("an integer"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(|| invalid("an integer"))?;
    }
    Ok(if negative { -n } else { n })
}

/// One RESP2 reply from `buf[*pos..]`, moving `*pos` past it; `None` while
/// it has not all arrived (then `*pos` means nothing).
fn parse(buf: &[u8], pos: &mut usize, depth: u8) -> io::Result<Option<Value>> {
    let start = *pos;
    let Some(cr) = buf.get(start..).and_then(|rest| rest.iter().position(|&b| b == b'\r')) else {
        return Ok(None);
    };
    let next = start + cr + 2;
    if next > buf.len() {
        return Ok(None);
    }
    if buf[next - 1] != b'\n' || cr == 0 {
        return Err(invalid("a line"));
    }
    let line = &buf[start + 1..start + cr];
    *pos = next;
    let value = match buf[start] {
        b'+' if line == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(String::from_utf8(line.to_vec()).map_err(|_| invalid("a status"))?),
        // Rare (NOSCRIPT, WRONGPASS, …): redis-rs makes its `ServerError`.
        b'-' => redis::parse_redis_value(&buf[start..next]).map_err(|_| invalid("an error"))?,
        b':' => Value::Int(integer(line)?),
        b'$' => match integer(line)? {
            n if n < 0 => Value::Nil,
            n if n > MAX_BULK => return Err(invalid("a bulk string longer than redis allows")),
            n => {
                let end = next + n as usize;
                if end + 2 > buf.len() {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(invalid("a bulk string"));
                }
                *pos = end + 2;
                Value::BulkString(buf[next..end].to_vec())
            }
        },
        b'*' => match integer(line)? {
            n if n < 0 => Value::Nil,
            _ if depth == MAX_DEPTH => return Err(invalid("arrays nested too deep")),
            n => {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    match parse(buf, pos, depth + 1)? {
                        Some(v) => items.push(v),
                        None => return Ok(None),
                    }
                }
                Value::Array(items)
            }
        },
        _ => return Err(invalid("an unknown type")),
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(buf: &[u8]) -> io::Result<Option<Value>> {
        let mut pos = 0;
        let v = parse(buf, &mut pos, 0)?;
        if v.is_some() {
            assert_eq!(pos, buf.len(), "the whole reply is read");
        }
        Ok(v)
    }

    #[test]
    fn parses_each_kind_of_reply() {
        assert_eq!(all(b"+OK\r\n").unwrap(), Some(Value::Okay));
        assert_eq!(all(b"+PONG\r\n").unwrap(), Some(Value::SimpleString("PONG".into())));
        assert_eq!(all(b":-42\r\n").unwrap(), Some(Value::Int(-42)));
        assert_eq!(all(b"$5\r\nhe\r\no\r\n").unwrap(), Some(Value::BulkString(b"he\r\no".to_vec())));
        assert_eq!(all(b"$0\r\n\r\n").unwrap(), Some(Value::BulkString(vec![])));
        assert_eq!(all(b"$-1\r\n").unwrap(), Some(Value::Nil));
        assert_eq!(all(b"*-1\r\n").unwrap(), Some(Value::Nil));
        assert_eq!(all(b"*0\r\n").unwrap(), Some(Value::Array(vec![])));
        assert_eq!(
            all(b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:7\r\n").unwrap(),
            Some(Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::Nil,
                Value::Array(vec![Value::Int(7)])
            ]))
        );
        let Some(Value::ServerError(e)) = all(b"-NOSCRIPT No matching script.\r\n").unwrap() else {
            panic!("a server error")
        };
        let e = RedisError::from(e);
        assert_eq!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
    }

    #[test]
    fn a_reply_cut_anywhere_is_incomplete_not_wrong() {
        let reply = b"*4\r\n$3\r\nabc\r\n:12\r\n$-1\r\n+OK\r\n";
        for cut in 0..reply.len() {
            assert_eq!(all(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        // Two replies back to back: each is read alone.
        let two = b":1\r\n$2\r\nhi\r\n";
        let mut pos = 0;
        assert_eq!(parse(two, &mut pos, 0).unwrap(), Some(Value::Int(1)));
        assert_eq!(parse(two, &mut pos, 0).unwrap(), Some(Value::BulkString(b"hi".to_vec())));
        assert_eq!(pos, two.len());
    }

    #[test]
    fn rejects_what_is_not_resp2() {
        for bad in [
            &b"?what\r\n"[..],
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"+OK\rx",
            b"\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    mod against_redis_protocol {
        //! The hand-written parser against a maintained one: any sequence
        //! of replies that `redis-protocol` encodes is read back as the same
        //! values, and cut anywhere it is incomplete, never wrong.
        use super::*;
        use proptest::prelude::*;
        use redis_protocol::resp2::encode::encode;
        use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

        fn frame() -> impl Strategy<Value = OwnedFrame> {
            let leaf = prop_oneof![
                "[^\r\n]{0,12}".prop_map(|s| OwnedFrame::SimpleString(s.into_bytes())),
                Just(OwnedFrame::SimpleString(b"OK".to_vec())),
                "(ERR|NOSCRIPT|WRONGTYPE|MOVED) [^\r\n]{0,12}".prop_map(OwnedFrame::Error),
                any::<i64>().prop_map(OwnedFrame::Integer),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(OwnedFrame::BulkString),
                Just(OwnedFrame::Null),
            ];
            leaf.prop_recursive(3, 32, 6, |inner| {
                proptest::collection::vec(inner, 0..6).prop_map(OwnedFrame::Array)
            })
        }

        /// What the frame is as a redis-rs value (a server error as
        /// redis-rs makes it from the line).
        fn expected(frame: &OwnedFrame) -> Value {
            match frame {
                OwnedFrame::SimpleString(s) if s == b"OK" => Value::Okay,
                OwnedFrame::SimpleString(s) => Value::SimpleString(String::from_utf8(s.clone()).unwrap()),
                OwnedFrame::Error(e) => redis::parse_redis_value(format!("-{e}\r\n").as_bytes()).unwrap(),
                OwnedFrame::Integer(n) => Value::Int(*n),
                OwnedFrame::BulkString(b) => Value::BulkString(b.clone()),
                OwnedFrame::Array(items) => Value::Array(items.iter().map(expected).collect()),
                OwnedFrame::Null => Value::Nil,
            }
        }

        proptest! {
            #[test]
            fn reads_what_redis_protocol_writes(
                frames in proptest::collection::vec(frame(), 1..4),
                cut in any::<proptest::sample::Index>(),
            ) {
                let mut buf = Vec::new();
                for f in &frames {
                    let start = buf.len();
                    buf.resize(start + f.encode_len(false), 0);
                    let written = encode(&mut buf[start..], f, false).unwrap();
                    buf.truncate(start + written);
                }
                let mut pos = 0;
                for f in &frames {
                    prop_assert_eq!(parse(&buf, &mut pos, 0).unwrap(), Some(expected(f)));
                }
                prop_assert_eq!(pos, buf.len());
                prop_assert_eq!(parse(&buf, &mut pos, 0).unwrap(), None);

                // Cut anywhere: the replies before the cut, then "not yet".
                let cut = cut.index(buf.len());
                let mut pos = 0;
                let mut whole = frames.iter();
                while let Some(value) = parse(&buf[..cut], &mut pos, 0).unwrap() {
                    prop_assert!(pos <= cut);
                    prop_assert_eq!(Some(value), whole.next().map(expected));
                }
            }
        }
    }

    /// A scripted stand-in for Redis: accepts connections and hands each to
    /// the test, which reads commands and writes replies itself. The URL
    /// asks for a greeting (AUTH, SELECT 3) on every connection.
    async fn fake_redis() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://u:secret@{}/3", listener.local_addr().unwrap());
        (listener, url)
    }

    /// [`fake_redis`] with a URL that asks for no greeting: the connection's
    /// first bytes are the test's first command.
    async fn fake_redis_plain() -> (tokio::net::TcpListener, String) {
        let (listener, _) = fake_redis().await;
        let url = format!("redis://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    fn pipe(url: &str) -> Pipe {
        Pipe::new(redis::Client::open(url).unwrap().get_connection_info()).unwrap()
    }

    /// Read from `conn` until `want` has arrived (and nothing else).
    async fn expect(conn: &mut tokio::net::TcpStream, want: &[u8]) {
        let mut got = vec![0; want.len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }

    fn command(args: &[&str]) -> Cmd {
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    fn packed(args: &[&str]) -> Vec<u8> {
        command(args).get_packed_command()
    }

    #[test]
    fn only_resp2_is_spoken() {
        let info = redis::Client::open("redis://127.0.0.1:6379/?protocol=resp3").unwrap();
        let e = Pipe::new(info.get_connection_info()).err().expect("RESP3 refused").to_string();
        assert!(e.contains("RESP2"), "{e}");
    }

    #[tokio::test]
    async fn greets_then_pipelines_and_hands_replies_back_in_order() {
        let (listener, url) = fake_redis().await;
        let pipe = Arc::new(pipe(&url));
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            expect(&mut conn, &[packed(&["AUTH", "u", "secret"]), packed(&["SELECT", "3"])].concat()).await;
            conn.write_all(b"+OK\r\n+OK\r\n").await.unwrap();
            expect(&mut conn, &packed(&["GET", "a"])).await;
            expect(&mut conn, &packed(&["GET", "b"])).await;
            // Both replies, a byte at a time.
            for b in b"$1\r\nA\r\n$-1\r\n" {
                conn.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            conn
        });
        let (get_a, get_b) = (command(&["GET", "a"]), command(&["GET", "b"]));
        let a = pipe.request(&get_a);
        tokio::pin!(a);
        // `a` is queued before `b` is.
        assert!(futures_poll_once(a.as_mut()).await.is_none());
        let b = pipe.request(&get_b);
        let (a, b) = tokio::join!(a, b);
        assert_eq!(a.unwrap(), Value::BulkString(b"A".to_vec()));
        assert_eq!(b.unwrap(), Value::Nil);
        assert_eq!(PipeRef(&pipe).get_db(), 3);
        server.await.unwrap();
    }

    /// Poll a future once: its output if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut f).poll(cx) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_shift_the_replies() {
        let (listener, url) = fake_redis_plain().await;
        let pipe = Arc::new(pipe(&url));
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            expect(&mut conn, &packed(&["GET", "slow"])).await;
            expect(&mut conn, &packed(&["GET", "next"])).await;
            conn.write_all(b"$4\r\nslow\r\n$4\r\nnext\r\n").await.unwrap();
            conn
        });
        let get_slow = command(&["GET", "slow"]);
        let slow = tokio::time::timeout(Duration::from_millis(50), pipe.request(&get_slow));
        assert!(slow.await.is_err(), "no reply yet: the caller gives up");
        let next = pipe.request(redis::cmd("GET").arg("next")).await.unwrap();
        assert_eq!(next, Value::BulkString(b"next".to_vec()));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_lost_connection_fails_its_commands_and_the_next_command_reconnects() {
        let (listener, url) = fake_redis_plain().await;
        let pipe = Arc::new(pipe(&url));
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            expect(&mut conn, &packed(&["GET", "a"])).await;
            drop(conn);
            let (mut conn, _) = listener.accept().await.unwrap();
            expect(&mut conn, &packed(&["PING"])).await;
            conn.write_all(b"+PONG\r\n").await.unwrap();
            conn
        });
        let e = pipe.request(&command(&["GET", "a"])).await.unwrap_err();
        assert!(e.is_io_error() && e.is_connection_dropped(), "{e:?}");
        assert_eq!(pipe.request(&command(&["PING"])).await.unwrap(), Value::SimpleString("PONG".into()));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_connect_fails_at_once_until_the_pause_is_over() {
        let (listener, _) = fake_redis().await;
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pipe = pipe(&format!("redis://{addr}"));
        let e = pipe.request(&command(&["PING"])).await.unwrap_err();
        assert!(e.is_connection_refusal(), "{e:?}");
        // Redis is back, but within the pause nothing tries it.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let again = pipe.request(&command(&["PING"])).await.unwrap_err();
        assert!(again.is_connection_refusal(), "the same error, within the pause: {again:?}");
        tokio::time::sleep(RETRY_PAUSE).await;
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            expect(&mut conn, &packed(&["PING"])).await;
            conn.write_all(b"+PONG\r\n").await.unwrap();
            conn
        });
        assert_eq!(pipe.request(&command(&["PING"])).await.unwrap(), Value::SimpleString("PONG".into()));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_password_fails_the_connect_with_the_server_error() {
        let (listener, url) = fake_redis().await;
        let pipe = pipe(&url);
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            expect(&mut conn, &packed(&["AUTH", "u", "secret"])).await;
            conn.write_all(b"-WRONGPASS invalid username-password pair\r\n").await.unwrap();
            conn
        });
        let e = pipe.request(&command(&["PING"])).await.unwrap_err();
        assert!(e.to_string().contains("WRONGPASS"), "{e}");
        assert!(e.is_io_error(), "counted as Redis unavailable: {e:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_greeting_that_hangs_pauses_the_callers_behind_it() {
        let (listener, url) = fake_redis().await;
        let pipe = pipe(&url);
        let server = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            conn // accepted, never answered
        });
        let ping = command(&["PING"]);
        let first = tokio::time::timeout(Duration::from_millis(100), pipe.request(&ping));
        assert!(first.await.is_err(), "the caller gave up");
        // The next caller is told at once rather than starting a hung attempt of its own.
        let next = tokio::time::timeout(Duration::from_secs(2), pipe.request(&ping));
        let e = next.await.expect("an answer within the pause").unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn an_io_task_that_ends_leaves_no_one_waiting_and_the_next_command_reconnects() {
        let (listener, url) = fake_redis_plain().await;
        let pipe = pipe(&url);
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            expect(&mut first, &packed(&["GET", "a"])).await;
            let (mut second, _) = listener.accept().await.unwrap();
            expect(&mut second, &packed(&["PING"])).await;
            second.write_all(b"+PONG\r\n").await.unwrap();
            (first, second)
        });
        let pipe = Arc::new(pipe);
        let waiting = tokio::spawn({
            let pipe = pipe.clone();
            async move { pipe.request(&command(&["GET", "a"])).await }
        });
        // Once the command is on the wire, end the task.
        let task = loop {
            {
                let state = pipe.shared.state.lock().unwrap();
                if state.open && state.out.is_empty() && state.waiting.len() == 1 {
                    break state.task.clone().expect("a task");
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        task.abort();
        let e = waiting.await.unwrap().unwrap_err();
        assert!(e.is_connection_dropped(), "{e:?}");
        assert_eq!(pipe.request(&command(&["PING"])).await.unwrap(), Value::SimpleString("PONG".into()));
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn an_empty_pipeline_sends_nothing_and_waits_for_nothing() {
        let pipe = pipe("redis://127.0.0.1:1");
        assert_eq!(pipe.request_many(&redis::pipe(), 0, 0).await.unwrap(), Vec::<Value>::new());
    }

    #[tokio::test]
    async fn a_dead_peer_is_noticed_by_keepalive_and_unacknowledged_data() {
        let (listener, _) = fake_redis().await;
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        tune(&stream).unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap() && socket.tcp_nodelay().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(10));
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(10)));
    }
}
