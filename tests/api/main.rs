#![allow(unreachable_pub, missing_docs)]
//! Integration tests of the /auth service against a real PostgreSQL: one binary, one fresh
//! database per test.

mod cli;
mod endpoints;
mod events;
mod expire;
mod faults;
mod helpers;
mod indexes;
mod limits;
mod login;
mod malformed;
mod modes;
mod owners;
mod proxy;
mod reads;
mod refresh;
mod secrets;
mod serve;
mod tower_conformance;
mod tower_example;
mod tower_resurrection;
mod tower_store;
mod tower_support;
