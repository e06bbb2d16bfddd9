//! Statement coalescing, a layer the stores are built with or without: concurrent calls of
//! one kind are gathered into one multi-row statement (one round trip, one commit for the
//! lot). It pays under load (the tower-sessions store's writes ×2–3 at 32 tasks,
//! `docs/BENCHMARKS.md`) and changes nothing for a lone caller.
//!
//! - [`Store::with_coalescing`](super::Store::with_coalescing): the session reads
//!   (`find_session`, the first statement of every refresh and check).
//! - [`PgSessionStore::with_coalescing`](super::PgSessionStore::with_coalescing): the
//!   tower-sessions store's creates, saves and loads.
//!
//! Built without it, each store runs its plain statements, one per call. Built with it, the
//! multi-row statements have one source each, shared with the single-row form: a read's
//! multi-row form is derived from the single-row statement's text ([`IdList`]); the
//! tower-sessions writes run the same SQL function for one row as for many.
//!
//! The scheduling (when a statement starts, which calls it takes) is in `lanes`.

mod id_list;
mod lanes;
mod reads;
mod tower;

pub(super) use reads::SessionReads;
pub(super) use tower::StoreLanes;

/// How a store coalesces: at most `lanes` multi-row statements of each kind at once, each
/// of at most `max_batch` calls. `lanes = 0` is no coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// Statements of one kind that may run at once.
    pub lanes: usize,
    /// Most calls in one statement (reads: at most 1024).
    pub max_batch: usize,
}

impl Coalescing {
    /// No coalescing: one statement per call.
    pub const OFF: Self = Self {
        lanes: 0,
        max_batch: 1,
    };

    /// The service's session reads: two statements at once, of up to 64 reads.
    pub const READS: Self = Self {
        lanes: 2,
        max_batch: 64,
    };

    /// The tower-sessions store: one statement of each kind at a time, of up to 64 rows
    /// (writes commit one after another anyway; more lanes split the same callers into smaller
    /// statements, `docs/benchmarks-history.md`).
    pub const STORE: Self = Self {
        lanes: 1,
        max_batch: 64,
    };

    /// Whether this is [`Coalescing::OFF`] (no lanes).
    pub fn is_off(&self) -> bool {
        self.lanes == 0
    }
}

/// The statements this layer builds at run time (the multi-row reads, one per size), each
/// with its number of parameters: every other statement of latchkey is a `query!` literal
/// checked at compile time. For plan checks (`tests/api/indexes.rs`).
pub fn runtime_statements() -> Vec<(&'static str, usize)> {
    let mut all = reads::FIND_MANY.all();
    all.extend(tower::LOAD_MANY.all());
    all
}

#[cfg(test)]
mod tests {
    //! The single-row statements the multi-row forms derive from are the `query!` literals
    //! the plain stores run (a `query!` takes only a literal, so each has a copy beside a
    //! constant).

    /// The text with every run of whitespace made one space.
    fn normalised(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The first raw string literal (`r#"…"#`) after `marker` in `source`.
    fn literal_after<'a>(source: &'a str, marker: &str) -> &'a str {
        let at = source.find(marker).expect("marker in source");
        let rest = &source[at..];
        let open = rest.find("r#\"").expect("a raw literal after the marker") + 3;
        let close = rest[open..].find("\"#").expect("the literal's end") + open;
        &rest[open..close]
    }

    #[test]
    fn the_load_statement_is_the_literal_the_plain_store_runs() {
        let source = include_str!("../tower.rs");
        assert_eq!(
            normalised(crate::store::tower::LOAD_SESSION_SQL),
            normalised(literal_after(source, "async fn load_one(")),
        );
    }

    #[test]
    fn every_multi_row_statement_derives() {
        let all = super::runtime_statements();
        assert_eq!(all.len(), 22);
        assert!(all.iter().all(|(sql, _)| sql.contains("id IN ($1")));
    }
}
