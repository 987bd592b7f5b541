//! Property test: a store driven by random sequences of operations behaves
//! exactly like a deliberately simple reference model of the lifecycle rules
//! (written here from DESIGN.md §2, not from the crate's own `lifecycle`).

use proptest::prelude::*;
use sessiongate::config::OnLimit;
use sessiongate::sessions::*;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

const USERS: [&str; 3] = ["ann", "ben", "cyd"];
const TOOLS: [&str; 3] = ["a", "b", "c"];
const T0: i64 = 1_795_600_800_000;

#[derive(Debug, Clone)]
enum Op {
    Create {
        user: usize,
        tool: usize,
        key: Option<u8>,
    },
    Heartbeat {
        user: usize,
        pick: usize,
    },
    Query {
        user: usize,
        pick: usize,
    },
    Migrate {
        user: usize,
        pick: usize,
        tool: usize,
    },
    Delete {
        user: usize,
        pick: usize,
    },
    Revoke {
        user: usize,
    },
    Advance {
        ms: i64,
    },
    Reap,
    /// A runtime config change: the cap and the lifetime from now on.
    Relimit {
        cap: u32,
        life: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, proptest::option::of(0..3u8)).prop_map(|(user, tool, key)| Op::Create { user, tool, key }),
        2 => (0..3usize, any::<usize>()).prop_map(|(user, pick)| Op::Heartbeat { user, pick }),
        2 => (0..3usize, any::<usize>()).prop_map(|(user, pick)| Op::Query { user, pick }),
        2 => (0..3usize, any::<usize>(), 0..3usize).prop_map(|(user, pick, tool)| Op::Migrate { user, pick, tool }),
        2 => (0..3usize, any::<usize>()).prop_map(|(user, pick)| Op::Delete { user, pick }),
        1 => (0..3usize).prop_map(|user| Op::Revoke { user }),
        3 => (0..40_000i64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reap),
        1 => (1..4u32, 10_000..90_000i64).prop_map(|(cap, life)| Op::Relimit { cap, life }),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (1..4u32, any::<bool>(), 5_000..30_000i64, 10_000..90_000i64, 1..4u32).prop_map(
        |(cap, reject, idle, life, keys)| Limits {
            max_per_user: cap,
            idle_ttl_ms: idle,
            max_lifetime_ms: life,
            on_limit: if reject { OnLimit::Reject } else { OnLimit::EvictOldest },
            idempotency_ttl_ms: 45_000,
            max_idempotency_keys: keys,
        },
    )
}

#[derive(Debug, Clone, PartialEq)]
struct M {
    id: Uuid,
    user: usize,
    tool: usize,
    created: i64,
    active: i64,
    expires: i64,
    turns: u32,
    migrations: u32,
}

/// An idempotency record: the tool set asked for, when it expires, the
/// session created and the sessions evicted for it.
type IdemRecord = (usize, i64, M, Vec<Uuid>);

#[derive(Default)]
struct Model {
    sessions: Vec<M>,
    idem: HashMap<(usize, u8), IdemRecord>,
}

/// What an operation returned, in a form both sides can produce.
#[derive(Debug, PartialEq)]
enum Out {
    Created(Uuid, Vec<Uuid>),
    Replayed(Uuid, Vec<Uuid>),
    Conflict,
    KeysFull(i64),
    Rejected(i64, Vec<Uuid>),
    Session(Option<(Uuid, String, u32, u32, i64, i64)>),
    Ended(Vec<Uuid>),
    Nothing,
}

fn expiry(created: i64, active: i64, l: &Limits) -> i64 {
    (active + l.idle_ttl_ms).min(created + l.max_lifetime_ms)
}

impl Model {
    fn live(&self, user: usize, now: i64) -> Vec<&M> {
        let mut v: Vec<&M> = self.sessions.iter().filter(|s| s.user == user && s.expires > now).collect();
        v.sort_by_key(|s| (s.created, s.id));
        v
    }

    fn apply(&mut self, op: &Op, id: Uuid, picked: Option<Uuid>, now: i64, l: &Limits) -> Out {
        let view = |s: &M| {
            Out::Session(Some((s.id, TOOLS[s.tool].to_string(), s.turns, s.migrations, s.active, s.expires)))
        };
        let find = |sessions: &mut Vec<M>, user: usize| -> Option<usize> {
            let id = picked?;
            sessions.iter().position(|s| s.id == id && s.user == user && s.expires > now)
        };
        match *op {
            Op::Create { user, tool, key } => {
                if let Some(k) = key
                    && let Some((t, exp, snap, ev)) = self.idem.get(&(user, k))
                    && *exp > now
                {
                    return if *t == tool { Out::Replayed(snap.id, ev.clone()) } else { Out::Conflict };
                }
                if key.is_some() {
                    let mut held: Vec<i64> = self
                        .idem
                        .iter()
                        .filter(|((u, _), (_, exp, _, _))| *u == user && *exp > now)
                        .map(|(_, (_, exp, _, _))| *exp)
                        .collect();
                    let max = l.max_idempotency_keys as usize;
                    if held.len() >= max {
                        // Until fewer than `max` are held.
                        held.sort();
                        return Out::KeysFull(held[held.len() - max] - now);
                    }
                }
                let live: Vec<M> = self.live(user, now).into_iter().cloned().collect();
                let mut evicted = Vec::new();
                if live.len() >= l.max_per_user as usize {
                    if l.on_limit == OnLimit::Reject {
                        // Until fewer than the cap are live.
                        let mut expiries: Vec<i64> = live.iter().map(|s| s.expires).collect();
                        expiries.sort();
                        let room = expiries[live.len() - l.max_per_user as usize];
                        return Out::Rejected(room - now, live.iter().map(|s| s.id).collect());
                    }
                    let mut order = live.clone();
                    order.sort_by_key(|s| (s.active, s.created, s.id));
                    for s in order.iter().take(live.len() + 1 - l.max_per_user as usize) {
                        evicted.push(s.id);
                        self.sessions.retain(|x| x.id != s.id);
                    }
                }
                let s = M {
                    id,
                    user,
                    tool,
                    created: now,
                    active: now,
                    expires: expiry(now, now, l),
                    turns: 0,
                    migrations: 0,
                };
                if let Some(k) = key {
                    self.idem
                        .insert((user, k), (tool, now + l.idempotency_ttl_ms, s.clone(), evicted.clone()));
                }
                self.sessions.push(s);
                Out::Created(id, evicted)
            }
            Op::Heartbeat { user, .. } | Op::Query { user, .. } | Op::Migrate { user, .. } => {
                let Some(i) = find(&mut self.sessions, user) else {
                    return Out::Session(None);
                };
                let s = &mut self.sessions[i];
                if s.created + l.max_lifetime_ms <= now {
                    // Past a lifetime lowered since: it expires, no activity.
                    s.expires = s.created + l.max_lifetime_ms;
                    return Out::Session(None);
                }
                match *op {
                    Op::Query { .. } => s.turns += 1,
                    Op::Migrate { tool, .. } if tool != s.tool => {
                        s.tool = tool;
                        s.turns = 0;
                        s.migrations += 1;
                    }
                    _ => {}
                }
                s.active = s.active.max(now);
                s.expires = expiry(s.created, s.active, l);
                view(s)
            }
            Op::Delete { user, .. } => match find(&mut self.sessions, user) {
                Some(i) => Out::Ended(vec![self.sessions.remove(i).id]),
                None => Out::Ended(vec![]),
            },
            Op::Revoke { user } => {
                let mut ended: Vec<Uuid> = self.live(user, now).iter().map(|s| s.id).collect();
                self.sessions.retain(|s| !ended.contains(&s.id));
                ended.sort();
                Out::Ended(ended)
            }
            Op::Reap => {
                let mut ended: Vec<Uuid> =
                    self.sessions.iter().filter(|s| s.expires <= now).map(|s| s.id).collect();
                self.sessions.retain(|s| s.expires > now);
                ended.sort();
                Out::Ended(ended)
            }
            Op::Advance { .. } | Op::Relimit { .. } => Out::Nothing,
        }
    }
}

async fn apply_store(
    store: &dyn SessionStore,
    op: &Op,
    id: Uuid,
    picked: Option<Uuid>,
    now: i64,
    l: &Limits,
) -> Out {
    let view = |t: Option<Touched>| {
        Out::Session(t.map(|t| {
            let s = t.session;
            (s.id, s.tool_set.to_string(), s.conversation_turns, s.migrations, s.last_active_at, s.expires_at)
        }))
    };
    let pick = picked.unwrap_or(Uuid::nil());
    match *op {
        Op::Create { user, tool, key } => {
            let outcome = store
                .create(CreateRequest {
                    id,
                    user_id: Arc::from(USERS[user]),
                    tool_set: Arc::from(TOOLS[tool]),
                    now,
                    limits: *l,
                    idempotency: key.map(|k| IdempotencyRequest {
                        key: format!("key-{k}"),
                        fingerprint: TOOLS[tool].into(),
                    }),
                })
                .await
                .unwrap();
            match outcome {
                CreateOutcome::Created { session, evicted } => {
                    Out::Created(session.id, evicted.iter().map(|s| s.id).collect())
                }
                CreateOutcome::Replayed { session, evicted_ids } => Out::Replayed(session.id, evicted_ids),
                CreateOutcome::IdempotencyConflict => Out::Conflict,
                CreateOutcome::IdempotencyKeysExhausted { retry_after_ms } => Out::KeysFull(retry_after_ms),
                CreateOutcome::LimitReached { retry_after_ms, live } => Out::Rejected(retry_after_ms, live),
            }
        }
        Op::Heartbeat { user, .. } => {
            view(store.touch(USERS[user], pick, Activity::Heartbeat, now, l).await.unwrap())
        }
        Op::Query { user, .. } => {
            view(store.touch(USERS[user], pick, Activity::Query, now, l).await.unwrap())
        }
        Op::Migrate { user, tool, .. } => view(
            store
                .touch(USERS[user], pick, Activity::Migrate { tool_set: Arc::from(TOOLS[tool]) }, now, l)
                .await
                .unwrap(),
        ),
        Op::Delete { user, .. } => Out::Ended(
            store.delete(USERS[user], pick, now).await.unwrap().into_iter().map(|s| s.id).collect(),
        ),
        Op::Revoke { user } => {
            let mut ids: Vec<Uuid> =
                store.revoke_user(USERS[user], now).await.unwrap().iter().map(|s| s.id).collect();
            ids.sort();
            Out::Ended(ids)
        }
        Op::Reap => {
            let mut ids: Vec<Uuid> =
                store.reap(now, usize::MAX).await.unwrap().iter().map(|s| s.id).collect();
            ids.sort();
            Out::Ended(ids)
        }
        Op::Advance { .. } | Op::Relimit { .. } => Out::Nothing,
    }
}

/// Drive `store` and the model with `ops`; fail at the first difference.
async fn run_against_model(
    store: Arc<dyn SessionStore>,
    mut l: Limits,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut now = T0;
    let mut ids: Vec<Uuid> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance { ms } => now += ms,
            Op::Relimit { cap, life } => l = Limits { max_per_user: cap, max_lifetime_ms: life, ..l },
            _ => {}
        }
        let id = Uuid::from_u128(step as u128 + 1);
        let picked = match op {
            Op::Heartbeat { pick, .. }
            | Op::Query { pick, .. }
            | Op::Migrate { pick, .. }
            | Op::Delete { pick, .. } => (!ids.is_empty()).then(|| ids[pick % ids.len()]),
            _ => None,
        };
        let want = model.apply(op, id, picked, now, &l);
        let got = apply_store(&*store, op, id, picked, now, &l).await;
        prop_assert_eq!(&got, &want, "step {} {:?}", step, op);
        if let Out::Created(id, _) = got {
            ids.push(id);
        }
        for (u, user) in USERS.iter().enumerate() {
            let listed: Vec<Uuid> = store.list(user, now).await.unwrap().iter().map(|s| s.id).collect();
            let expected: Vec<Uuid> = model.live(u, now).iter().map(|s| s.id).collect();
            prop_assert_eq!(listed, expected, "live sessions of {} after step {} {:?}", user, step, op);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_reference_model(l in limits(), ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run_against_model(Arc::new(sessiongate::store::MemoryStore::new()), l, ops))?;
    }
}

/// The same property on Redis at `urls` (one: a single node; several: a
/// Cluster's seeds), each case under its own key prefix.
fn redis_matches_the_reference_model(urls: Vec<String>, cases: u32) {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let case = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    let result = runner.run(&(limits(), proptest::collection::vec(op(), 1..60)), |(l, ops)| {
        case.set(case.get() + 1);
        rt.block_on(async {
            use crate::store_suite::{redis_config, redis_store_from};
            let store = redis_store_from(redis_config(urls.clone(), &format!("model{}", case.get())));
            run_against_model(store, l, ops).await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// One server of the test's own for all cases (owned here, so it is stopped
/// even when a case fails).
#[test]
fn redis_store_matches_the_reference_model() {
    let server = crate::redis_server::RedisServer::start();
    redis_matches_the_reference_model(vec![server.url()], 150);
}

/// A Cluster of the test's own: the same rules with every group's keys in
/// their slots on three masters (fewer cases: each step is a routed call).
#[test]
fn redis_cluster_store_matches_the_reference_model() {
    let cluster = crate::redis_server::RedisCluster::start();
    redis_matches_the_reference_model(cluster.urls(), 48);
}
