//! Multi-row reads derived from their single-row statement.

use std::sync::OnceLock;

/// Most ids one [`IdList`] statement takes.
pub(super) const MAX_ID_LIST: usize = 1024;

/// The multi-row form of a single-row read, made from the single-row statement's own text:
/// its key condition (e.g. `id = $1`) becomes `id IN ($1, …, $n)`, and nothing else changes,
/// so the columns and every other condition have one source, the statement the plain store
/// runs. There is one statement per power of two up to [`MAX_ID_LIST`]; a batch is padded up
/// to the next size by repeating its last id ([`IdList::padded`]), which matches its row once.
///
/// Why not one array parameter: the generic plan of `id = ANY($1::uuid[])` guesses 10 ids
/// and always looks dearer than a custom plan for the few actually sent, so PostgreSQL plans
/// that statement again at every run. With `n` parameters both plans expect `n` rows and the
/// plan cache keeps the generic one. Each size's text is built once per process.
pub(super) struct IdList {
    /// The single-row statement.
    single: &'static str,
    /// Its key condition, found exactly once in it; its parameters are the statement's only ones.
    key: &'static str,
    sizes: [OnceLock<String>; 11],
}

impl IdList {
    /// The multi-row form of `single`, whose condition `key` is replaced by `id IN (…)`.
    pub(super) const fn new(single: &'static str, key: &'static str) -> Self {
        Self {
            single,
            key,
            sizes: [const { OnceLock::new() }; 11],
        }
    }

    /// The statement for `n` ids (1 ≤ `n` ≤ [`MAX_ID_LIST`]) and its number of parameters.
    pub(super) fn statement(&self, n: usize) -> (&str, usize) {
        // The lanes cap their batches at MAX_ID_LIST; more ids would not all be bound.
        debug_assert!(n <= MAX_ID_LIST, "{n} ids for one statement");
        let size = n.clamp(1, MAX_ID_LIST).next_power_of_two();
        let sql = self.sizes[size.trailing_zeros() as usize].get_or_init(|| {
            let params: Vec<String> = (1..=size).map(|i| format!("${i}")).collect();
            self.derive(&params.join(", "))
        });
        (sql, size)
    }

    /// The single-row statement with its key condition replaced by `id IN (params)`.
    fn derive(&self, params: &str) -> String {
        let mut parts = self.single.split(self.key);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(head), Some(tail), None) => format!("{head}id IN ({params}){tail}"),
            // A unit test derives every statement, so this cannot ship.
            _ => panic!("`{}` is not exactly once in its statement", self.key),
        }
    }

    /// Every size's statement with its number of parameters, for plan checks.
    pub(super) fn all(&self) -> Vec<(&str, usize)> {
        (0..self.sizes.len())
            .map(|bits| self.statement(1 << bits))
            .collect()
    }

    /// `ids` padded to `size` by repeating the last one.
    pub(super) fn padded<T: Copy>(ids: &[T], size: usize) -> impl Iterator<Item = T> + '_ {
        (0..size).filter_map(move |i| ids.get(i.min(ids.len().saturating_sub(1))).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multi_row_form_changes_only_the_key_condition() {
        static LIST: IdList = IdList::new("SELECT a, b FROM t WHERE id = $1 AND live", "id = $1");
        assert_eq!(
            LIST.statement(1),
            ("SELECT a, b FROM t WHERE id IN ($1) AND live", 1)
        );
        assert_eq!(
            LIST.statement(3),
            (
                "SELECT a, b FROM t WHERE id IN ($1, $2, $3, $4) AND live",
                4
            )
        );
        assert_eq!(LIST.all().len(), 11);
        assert_eq!(LIST.all()[10].1, MAX_ID_LIST);
    }

    #[test]
    #[should_panic(expected = "not exactly once")]
    fn a_key_that_is_not_in_the_statement_is_refused() {
        IdList::new("SELECT 1 FROM t WHERE id = $1", "id = $2").statement(2);
    }

    #[test]
    fn padding_repeats_the_last_id() {
        let got: Vec<u8> = IdList::padded(&[1, 2, 3], 4).collect();
        assert_eq!(got, [1, 2, 3, 3]);
    }
}
