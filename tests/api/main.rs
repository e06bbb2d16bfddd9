#![allow(unreachable_pub, missing_docs)]
//! Integration tests of the /auth service against a real PostgreSQL: one binary, one fresh
//! database per test.

mod bench_sql;
mod cli;
mod config;
mod disable;
mod domain_literals;
mod embed;
mod endpoints;
mod events;
mod expire;
mod faults;
mod helpers;
mod hostile_http;
mod indexes;
mod limits;
mod listing;
mod login;
mod malformed;
mod migrations;
mod modes;
mod owners;
mod proxy;
mod reads;
mod refresh;
mod revoke;
mod secrets;
mod security_doc;
mod serve;
mod session_state;
mod throttle;
mod tower_conformance;
mod tower_example;
mod tower_resurrection;
mod tower_store;
mod tower_support;
