//! Integration tests: the real server on 127.0.0.1:0, spoken to over HTTP.
//! One binary (`cargo test --test api`), one module per area.

mod helpers;
mod redis_server;

mod admin;
mod agent_http;
mod auth;
mod auth_keys;
mod cli;
mod cluster_faults;
mod cors;
mod errors;
mod faults;
mod lifecycle;
mod limiter_model;
mod loadtest;
mod monitoring;
mod observability;
mod openapi;
mod overload;
mod owasp;
mod process;
mod ratelimit;
mod redis_e2e;
mod rolling;
mod runtime_config;
mod sessions;
mod shutdown;
mod store_model;
mod store_suite;
mod traces;
mod workload;
