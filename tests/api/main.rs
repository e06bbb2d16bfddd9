#![allow(unreachable_pub, missing_docs)]
//! Integration tests of the /auth service against a real PostgreSQL: one binary, one fresh
//! database per test.

mod expire;
mod helpers;
mod indexes;
mod login;
mod modes;
mod refresh;
