//! The soak driver (`loadtest/soak.sh` runs it against a release build): many
//! users churn through the frontend journey — create (some with an
//! `Idempotency-Key`), queries, a tool-set switch, heartbeat, then delete or
//! abandon — for a bounded time, while the server's resident memory, open
//! file descriptors, threads, live tokio tasks and session gauges are sampled.
//! After the load it waits for every abandoned session to expire and checks
//! that the process is back where it started: no sessions, no expired
//! sessions pending, every created session ended exactly once, no leaked
//! tasks or connections, and resident memory flat after warm-up.
//!
//! `soak --url URL --pid PID --secret S [--secs 600] [--workers 48]
//!       [--users 5000] [--idle-ttl 20] [--sample 10] [--check]`
//!
//! Exits 1 when `--check` is given and a check fails, or on any 5xx or
//! unexpected answer. Not part of the product.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sessiongate::config::Secret;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const TOOL_SETS: [&str; 3] = ["general", "research", "coding"];
/// The server's `sessions.idempotency_ttl` in `loadtest/soak.sh`, in seconds.
const IDEMPOTENCY_TTL: u64 = 60;

struct Args {
    url: String,
    pid: u32,
    secret: String,
    secs: u64,
    workers: usize,
    users: usize,
    idle_ttl: u64,
    sample: u64,
    check: bool,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        pid: 0,
        secret: String::new(),
        secs: 600,
        workers: 48,
        users: 5000,
        idle_ttl: 20,
        sample: 10,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--pid" => a.pid = val().parse().expect("--pid"),
            "--secret" => a.secret = val(),
            "--secs" => a.secs = val().parse().expect("--secs"),
            "--workers" => a.workers = val().parse().expect("--workers"),
            "--users" => a.users = val().parse().expect("--users"),
            "--idle-ttl" => a.idle_ttl = val().parse().expect("--idle-ttl"),
            "--sample" => a.sample = val().parse().expect("--sample"),
            "--check" => a.check = true,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.url.is_empty() && a.pid != 0 && !a.secret.is_empty(),
        "--url, --pid and --secret are required"
    );
    a
}

/// What the workload itself holds: abandoned sessions until their idle expiry
/// (by id), and the number of journeys between create and delete/abandon.
#[derive(Default)]
struct Held {
    abandoned: HashMap<String, Instant>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    journeys: AtomicU64,
    created: AtomicU64,
    replayed: AtomicU64,
    deleted: AtomicU64,
    abandoned: AtomicU64,
    evicted_seen: AtomicU64,
    in_journey: AtomicU64,
    unexpected: AtomicU64,
    server_errors: AtomicU64,
}

struct Sample {
    at: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: f64,
    active: f64,
    pending: f64,
    held: u64,
    rps: f64,
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// Sum of every sample of `name` (all label sets) in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metric_with(page: &str, series: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_page(client: &Client, url: &str) -> String {
    client.get(format!("{url}/metrics")).send().await.expect("metrics").text().await.expect("metrics text")
}

async fn sample(
    client: &Client,
    a: &Args,
    held: &Mutex<Held>,
    c: &Counters,
    start: Instant,
    rps: f64,
) -> Sample {
    let page = metrics_page(client, &a.url).await;
    let idle = Duration::from_secs(a.idle_ttl);
    let abandoned_live = {
        let mut h = held.lock().await;
        h.abandoned.retain(|_, at| at.elapsed() < idle + Duration::from_secs(5));
        h.abandoned.values().filter(|at| at.elapsed() < idle).count() as u64
    };
    Sample {
        at: start.elapsed().as_secs(),
        rss_kib: proc_status(a.pid, "VmRSS:"),
        fds: open_fds(a.pid),
        threads: proc_status(a.pid, "Threads:"),
        tasks: metric_sum(&page, "sessiongate_runtime_alive_tasks"),
        active: metric_sum(&page, "sessiongate_sessions_active"),
        pending: metric_sum(&page, "sessiongate_sessions_expired_pending"),
        held: abandoned_live + c.in_journey.load(Ordering::Relaxed),
        rps,
    }
}

fn print_header() {
    println!(
        "{:>6} {:>9} {:>10} {:>5} {:>7} {:>7} {:>8} {:>8} {:>8}",
        "t(s)", "req/s", "rss(MiB)", "fds", "threads", "tasks", "active", "held", "pending"
    );
}

fn print(s: &Sample) {
    println!(
        "{:>6} {:>9.0} {:>10.1} {:>5} {:>7} {:>7} {:>8} {:>8} {:>8}",
        s.at,
        s.rps,
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.threads,
        s.tasks,
        s.active,
        s.held,
        s.pending
    );
}

/// One journey for one user. Any answer other than the expected one is
/// counted (and a 5xx separately); the journey then stops.
async fn journey(client: &Client, a: &Args, token: &str, n: u64, held: &Mutex<Held>, c: &Counters) {
    let expect = |got: StatusCode, want: StatusCode, what: &str| {
        c.requests.fetch_add(1, Ordering::Relaxed);
        if got == want {
            return true;
        }
        if got.is_server_error() {
            c.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if c.unexpected.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("unexpected: {what} answered {got}, expected {want}");
        }
        false
    };
    let tool = TOOL_SETS[(n % 3) as usize];
    let mut create =
        client.post(format!("{}/v1/sessions", a.url)).bearer_auth(token).json(&json!({"tool_set": tool}));
    let keyed = n.is_multiple_of(3);
    if keyed {
        create = create.header("Idempotency-Key", format!("soak-{n}"));
    }
    let Ok(r) = create.send().await else {
        c.unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if !expect(r.status(), StatusCode::CREATED, "create") {
        return;
    }
    let body: Value = r.json().await.expect("session JSON");
    let id = body["id"].as_str().expect("id").to_string();
    c.created.fetch_add(1, Ordering::Relaxed);
    c.in_journey.fetch_add(1, Ordering::Relaxed);
    if let Some(ev) = body["evicted_session_id"].as_str() {
        c.evicted_seen.fetch_add(1, Ordering::Relaxed);
        held.lock().await.abandoned.remove(ev);
    }
    let base = format!("{}/v1/sessions/{id}", a.url);
    let mut ok = true;
    if keyed {
        // A retry of the same create replays it.
        let r = client
            .post(format!("{}/v1/sessions", a.url))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("soak-{n}"))
            .json(&json!({"tool_set": tool}))
            .send()
            .await;
        ok &= r.is_ok_and(|r| {
            let replay = r.headers().contains_key("idempotent-replayed");
            expect(r.status(), StatusCode::CREATED, "replayed create") && replay
        });
        c.replayed.fetch_add(1, Ordering::Relaxed);
    }
    for q in 0..(1 + n % 3) {
        if !ok {
            break;
        }
        let r = client
            .post(format!("{base}/queries"))
            .bearer_auth(token)
            .json(&json!({"input": format!("question {q}")}))
            .send()
            .await;
        ok &= r.is_ok_and(|r| expect(r.status(), StatusCode::OK, "query"));
    }
    if ok && n.is_multiple_of(4) {
        let next = TOOL_SETS[((n + 1) % 3) as usize];
        let r = client.patch(&base).bearer_auth(token).json(&json!({"tool_set": next})).send().await;
        ok &= r.is_ok_and(|r| expect(r.status(), StatusCode::OK, "migrate"));
    }
    if ok {
        let r = client.post(format!("{base}/heartbeat")).bearer_auth(token).send().await;
        ok &= r.is_ok_and(|r| expect(r.status(), StatusCode::OK, "heartbeat"));
    }
    if ok && n.is_multiple_of(5) {
        let r = client.get(format!("{}/v1/sessions", a.url)).bearer_auth(token).send().await;
        ok &= r.is_ok_and(|r| expect(r.status(), StatusCode::OK, "list"));
    }
    // A quarter are abandoned and left to expire; the rest are deleted. A
    // failed step abandons too: the server expires it like any other.
    if ok && n % 4 != 1 {
        let r = client.delete(&base).bearer_auth(token).send().await;
        // 404: evicted meanwhile by another journey of the same user.
        if r.is_ok_and(|r| {
            r.status() == StatusCode::NOT_FOUND || expect(r.status(), StatusCode::NO_CONTENT, "delete")
        }) {
            c.deleted.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        held.lock().await.abandoned.insert(id, Instant::now());
        c.abandoned.fetch_add(1, Ordering::Relaxed);
    }
    c.in_journey.fetch_sub(1, Ordering::Relaxed);
    c.journeys.fetch_add(1, Ordering::Relaxed);
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    sessiongate::net::init_tls();
    let secret = Secret::new(a.secret.clone());
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..a.users)
            .map(|u| {
                sessiongate::auth::mint_token(
                    &secret,
                    "sessiongate",
                    "sessiongate",
                    &format!("soak-user-{u}"),
                    &[],
                    Duration::from_secs(a.secs + 3600),
                )
                .expect("token")
            })
            .collect(),
    );
    let probe = Client::new();
    let held = Arc::new(Mutex::new(Held::default()));
    let c = Arc::new(Counters::default());
    // One journey first: connections a backend opens lazily on first use
    // (a Redis connection per kind of command, say) are part of the level
    // the process returns to, not a leak. What grows with load is.
    let first = Client::new();
    journey(&first, &a, &tokens[0], 1_000_000_000_000, &held, &c).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let before = sample(&probe, &a, &held, &c, start, 0.0).await;
    println!("before the load:");
    print_header();
    print(&before);

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let load = Client::builder().pool_max_idle_per_host(a.workers).build().expect("client");
    let workers: Vec<_> = (0..a.workers)
        .map(|_| {
            let (a, tokens, held, c, stop, next, client) = (
                a.clone(),
                tokens.clone(),
                held.clone(),
                c.clone(),
                stop.clone(),
                next.clone(),
                load.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    // Users are visited in a scattered order, so a user's
                    // journeys rarely overlap.
                    let user = (n.wrapping_mul(2_654_435_761) % a.users as u64) as usize;
                    journey(&client, &a, &tokens[user], n, &held, &c).await;
                }
            })
        })
        .collect();

    println!("\nunder load ({} workers, {} users, {} s):", a.workers, a.users, a.secs);
    print_header();
    let mut samples = Vec::new();
    let mut last = (Instant::now(), 0u64);
    let deadline = start + Duration::from_secs(a.secs);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(a.sample).min(deadline - Instant::now())).await;
        let reqs = c.requests.load(Ordering::Relaxed);
        let rps = (reqs - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), reqs);
        let s = sample(&probe, &a, &held, &c, start, rps).await;
        print(&s);
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    drop(load);

    // Every abandoned session expires after idle_ttl; the reaper sweeps it.
    tokio::time::sleep(Duration::from_secs(a.idle_ttl + 5)).await;
    // Connections close asynchronously (a client's pooled connection, the
    // server's task noticing it): give tasks and fds up to 15 s more to get
    // back to their level. A leak never does.
    let mut after = sample(&probe, &a, &held, &c, start, 0.0).await;
    for _ in 0..15 {
        if after.tasks <= before.tasks && after.fds <= before.fds {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = sample(&probe, &a, &held, &c, start, 0.0).await;
    }
    if after.fds > before.fds {
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", a.pid))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        println!("open fds after the load: {fds:?}");
        // Which TCP peers those sockets have (hex local and remote
        // address:port, by inode), to tell a Redis connection from an HTTP one.
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
            + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        for fd in &fds {
            let Some(inode) = fd.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) else { continue };
            for line in table.lines() {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.get(9) == Some(&inode) {
                    println!("  socket {inode}: local {} remote {} state {}", cols[1], cols[2], cols[3]);
                }
            }
        }
    }
    let page = metrics_page(&probe, &a.url).await;
    println!("\nafter the load and idle_ttl + 5 s (t = {} s):", after.at);
    print_header();
    print(&after);

    let created_total = metric_sum(&page, "sessiongate_sessions_created_total");
    let ended_total = metric_sum(&page, "sessiongate_sessions_ended_total");
    let ended = |reason: &str| {
        metric_with(&page, &format!("sessiongate_sessions_ended_total{{reason=\"{reason}\"}}"))
    };
    let journeys = c.journeys.load(Ordering::Relaxed);
    println!(
        "\njourneys {journeys}, requests {}, created {} (+{} replays), deleted {}, abandoned {}, evictions seen {}",
        c.requests.load(Ordering::Relaxed),
        c.created.load(Ordering::Relaxed),
        c.replayed.load(Ordering::Relaxed),
        c.deleted.load(Ordering::Relaxed),
        c.abandoned.load(Ordering::Relaxed),
        c.evicted_seen.load(Ordering::Relaxed),
    );
    println!(
        "server: created {created_total}, ended {ended_total} (deleted {}, expired {}, evicted {}, revoked {})",
        ended("deleted"),
        ended("expired"),
        ended("evicted"),
        ended("revoked")
    );

    // Resident memory after warm-up. Warm-up is the first fifth of the run,
    // and at least long enough for the state to turn over once (abandoned
    // sessions live idle_ttl, idempotency records WARM_UP_TTL): only then is
    // the amount held steady. Shorter runs report memory but do not judge it.
    let warm_up = (a.secs / 5).max(a.idle_ttl + IDEMPOTENCY_TTL + 10);
    let judged = a.secs >= warm_up * 2;
    let warm = samples.iter().position(|s| s.at >= warm_up).unwrap_or(samples.len().saturating_sub(1));
    let warm_rss = samples.get(warm).map_or(0, |s| s.rss_kib);
    let late_peak = samples[warm..].iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let growth = late_peak as f64 / warm_rss.max(1) as f64;
    println!(
        "resident memory: {:.1} MiB at the end of warm-up (t={} s), peak after it {:.1} MiB ({:+.1}%), {:.1} MiB after the load",
        warm_rss as f64 / 1024.0,
        samples.get(warm).map_or(0, |s| s.at),
        late_peak as f64 / 1024.0,
        (growth - 1.0) * 100.0,
        after.rss_kib as f64 / 1024.0
    );
    if !judged {
        println!(
            "  (a run shorter than {} s is too short to judge memory: it is reported, not checked)",
            warm_up * 2
        );
    }
    let worst_gap = samples.iter().map(|s| (s.active - s.held as f64).abs()).fold(0.0, f64::max);
    println!("largest |active - held| under load: {worst_gap} (the gauge is refreshed by each reaper sweep)");

    let unexpected = c.unexpected.load(Ordering::Relaxed);
    let server_errors = c.server_errors.load(Ordering::Relaxed);
    let checks = [
        ("no 5xx", server_errors == 0),
        ("no unexpected answers", unexpected == 0),
        ("no live sessions left", after.active == 0.0),
        ("no expired sessions pending", after.pending == 0.0),
        ("every created session ended exactly once", created_total == ended_total && created_total > 0.0),
        ("live tokio tasks back to the level before the load", after.tasks <= before.tasks),
        ("open file descriptors back to the level before the load", after.fds <= before.fds),
        (
            "resident memory after warm-up within 10% (+8 MiB) of warm-up's end",
            !judged || late_peak <= warm_rss + warm_rss / 10 + 8192,
        ),
    ];
    let mut failed = false;
    for (what, ok) in checks {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        failed |= !ok;
    }
    if a.check && failed {
        std::process::exit(1);
    }
}
