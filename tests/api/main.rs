#![allow(unreachable_pub, missing_docs)]
//! Integration tests of the /auth service against a real PostgreSQL: one binary, one fresh
//! database per test.

mod helpers;
mod login;
mod modes;
mod refresh;
mod tower_conformance;
mod tower_example;
mod tower_resurrection;
mod tower_store;
mod tower_support;
