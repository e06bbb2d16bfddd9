//! Statement coalescing for [`super::PgSessionStore`]: concurrent calls of one kind (create,
//! save, load) are gathered and sent as ONE multi-row statement, one round trip and one commit
//! for the lot, instead of one statement and one commit each.
//!
//! Nothing waits on a timer. Up to `lanes` statements of a kind run at once; a call that
//! finds a free slot runs its statement itself, at once, with no hand-off to another task.
//! The calls that arrive while every slot is busy queue up, and when a statement ends the
//! queue goes together into the next one (the way PostgreSQL's group commit gathers WAL
//! flushes). A lone caller gets a statement of one; under load the statements grow by
//! themselves.
//!
//! A call never joins a statement that already has a call for its row, nor starts while a
//! running statement holds its row: calls for one row run one after the other, in order, so
//! every save is applied (and versioned) on its own, and two statements of the store never
//! hold the same row, so they cannot deadlock each other. When a multi-row statement fails,
//! each caller is told to run its own single-row statement instead, so one bad row, or a
//! deadlock with another writer, fails no one else.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::oneshot;
use uuid::Uuid;

/// What a caller gets back.
pub(super) enum Answer<Q, R> {
    /// The statement ran; this is the caller's share of its result.
    Done(R),
    /// A multi-row statement failed: run the single-row statement instead (the request comes
    /// back).
    RunAlone(Q),
    /// The statement failed with nobody else in it: the error, as the single-row statement
    /// would have met it.
    Failed(sqlx::Error),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs one multi-row statement: hands the requests back with one answer per request, in
/// order.
pub(super) type Exec<Q, R> =
    Arc<dyn Fn(Vec<Q>) -> BoxFuture<(Vec<Q>, Result<Vec<R>, sqlx::Error>)> + Send + Sync>;

/// A queued call.
struct Job<Q, R> {
    row: Uuid,
    request: Q,
    reply: oneshot::Sender<Answer<Q, R>>,
}

/// The coalescer of one kind of statement.
pub(super) struct Lanes<Q, R> {
    inner: Arc<Inner<Q, R>>,
}

struct Inner<Q, R> {
    lanes: usize,
    max_batch: usize,
    exclusive: bool,
    exec: Exec<Q, R>,
    state: Mutex<State<Q, R>>,
}

struct State<Q, R> {
    /// Statements running.
    running: usize,
    /// Rows held by running statements (`exclusive` only).
    busy: HashSet<Uuid>,
    /// Calls waiting for a statement, oldest first.
    waiting: VecDeque<Job<Q, R>>,
}

impl<Q, R> fmt::Debug for Lanes<Q, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lanes")
            .field("lanes", &self.inner.lanes)
            .field("max_batch", &self.inner.max_batch)
            .finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, R: Send + 'static> Lanes<Q, R> {
    /// At most `lanes` statements at once, each with at most `max_batch` requests.
    ///
    /// `exclusive`: calls for one row never share or overlap a statement (writes). Reads
    /// pass `false`: calls for one row may share a statement and each gets the row.
    pub(super) fn new(lanes: usize, max_batch: usize, exclusive: bool, exec: Exec<Q, R>) -> Self {
        Self {
            inner: Arc::new(Inner {
                lanes: lanes.max(1),
                max_batch: max_batch.max(1),
                exclusive,
                exec,
                state: Mutex::new(State {
                    running: 0,
                    busy: HashSet::new(),
                    waiting: VecDeque::new(),
                }),
            }),
        }
    }

    /// Runs `request` (on row `row`): at once, in the caller's task, when a slot is free and
    /// (for `exclusive`) no running statement holds the row; else in the next statement that
    /// has room for it.
    pub(super) async fn submit(&self, row: Uuid, request: Q) -> Answer<Q, R> {
        let inner = &self.inner;
        let queued = {
            let mut state = inner.lock();
            if state.running < inner.lanes && !(inner.exclusive && state.busy.contains(&row)) {
                state.running += 1;
                if inner.exclusive {
                    state.busy.insert(row);
                }
                Err(request)
            } else {
                let (reply, answer) = oneshot::channel();
                state.waiting.push_back(Job {
                    row,
                    request,
                    reply,
                });
                Ok(answer)
            }
        };
        match queued {
            Ok(answer) => answer
                .await
                .unwrap_or(Answer::Failed(sqlx::Error::WorkerCrashed)),
            Err(request) => {
                // The slot is given back (and the queue started) even if this future is
                // dropped half-way.
                let _slot = Slot {
                    inner: inner.clone(),
                    rows: if inner.exclusive { vec![row] } else { vec![] },
                };
                match (inner.exec)(vec![request]).await {
                    (_, Err(e)) => Answer::Failed(e),
                    (_, Ok(mut results)) => match (results.pop(), results.is_empty()) {
                        (Some(result), true) => Answer::Done(result),
                        _ => Answer::Failed(miscounted()),
                    },
                }
            }
        }
    }
}

/// A statement answered another number of rows than it was given: a bug, reported as an
/// error to every caller (never rerun: the statement may have written).
fn miscounted() -> sqlx::Error {
    tracing::error!("coalesced statement answered the wrong number of rows");
    sqlx::Error::Protocol("coalesced statement answered the wrong number of rows".to_owned())
}

impl<Q: Send + 'static, R: Send + 'static> Inner<Q, R> {
    fn lock(&self) -> MutexGuard<'_, State<Q, R>> {
        // A panic while holding the lock leaves consistent counters (no code between the
        // updates can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A statement ended: frees its slot and rows, and starts statements for the queue while
    /// slots are free.
    fn finish(self: &Arc<Self>, rows: &[Uuid]) {
        let mut start = Vec::new();
        let runtime = tokio::runtime::Handle::try_current().ok();
        {
            let mut state = self.lock();
            state.running -= 1;
            for row in rows {
                state.busy.remove(row);
            }
            while state.running < self.lanes && !state.waiting.is_empty() {
                // Oldest first, one call per row (`exclusive`), none on a busy row.
                let mut rows = Vec::new();
                let mut batch = Vec::new();
                let mut later = VecDeque::with_capacity(state.waiting.len());
                let waiting = std::mem::take(&mut state.waiting);
                for job in waiting {
                    if batch.len() < self.max_batch
                        && (!self.exclusive || state.busy.insert(job.row))
                    {
                        if self.exclusive {
                            rows.push(job.row);
                        }
                        batch.push(job);
                    } else {
                        later.push_back(job);
                    }
                }
                state.waiting = later;
                if batch.is_empty() {
                    break;
                }
                if runtime.is_none() {
                    // No runtime left to run it (shutting down): its callers get
                    // `WorkerCrashed` when `batch` is dropped.
                    for row in &rows {
                        state.busy.remove(row);
                    }
                    break;
                }
                state.running += 1;
                start.push((rows, batch));
            }
        }
        // Spawned after the lock is released: a runtime that is shutting down drops a new
        // task at once, and its slot's `finish` takes the lock again.
        if let Some(runtime) = runtime {
            for (rows, batch) in start {
                let slot = Slot {
                    inner: self.clone(),
                    rows,
                };
                runtime.spawn(async move {
                    let slot = slot;
                    run(&slot.inner.exec, batch).await;
                });
            }
        }
    }
}

/// A running statement's slot; dropping it ends the statement's turn.
struct Slot<Q: Send + 'static, R: Send + 'static> {
    inner: Arc<Inner<Q, R>>,
    rows: Vec<Uuid>,
}

impl<Q: Send + 'static, R: Send + 'static> Drop for Slot<Q, R> {
    fn drop(&mut self) {
        self.inner.finish(&self.rows);
    }
}

/// Runs one statement for `batch` and answers each request.
async fn run<Q, R>(exec: &Exec<Q, R>, batch: Vec<Job<Q, R>>) {
    let (requests, replies): (Vec<Q>, Vec<oneshot::Sender<Answer<Q, R>>>) =
        batch.into_iter().map(|j| (j.request, j.reply)).unzip();
    let n = requests.len();
    match exec(requests).await {
        (_, Ok(results)) if results.len() == n => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Answer::Done(result));
            }
        }
        (_, Err(e)) if n == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Answer::Failed(e));
            }
        }
        (_, Ok(_)) => {
            for reply in replies {
                let _ = reply.send(Answer::Failed(miscounted()));
            }
        }
        (requests, Err(e)) => {
            tracing::debug!(error = %e, rows = n, "coalesced statement failed; running its rows one by one");
            for (reply, request) in replies.into_iter().zip(requests) {
                let _ = reply.send(Answer::RunAlone(request));
            }
        }
    }
}

/// Most ids one [`IdList`] statement takes.
pub(super) const MAX_ID_LIST: usize = 1024;

/// A multi-row read by id written with one parameter per id (`id IN ($1, …, $n)`), in one
/// statement per power of two up to [`MAX_ID_LIST`]; a batch is padded up to the next size
/// by repeating its last id ([`IdList::padded`]), which matches its row once.
///
/// Why not one array parameter: the generic plan of `id = ANY($1::uuid[])` guesses 10 ids
/// and always looks dearer than a custom plan for the few actually sent, so PostgreSQL plans
/// that statement again at every run. With `n` parameters both plans expect `n` rows and the
/// plan cache keeps the generic one. Each size's text is built once per process.
pub(super) struct IdList {
    /// The statement, given the parameter list (`$2, $3, …`).
    build: fn(&str) -> String,
    /// The number of the first id parameter (the ones before it are the statement's own).
    first: usize,
    sizes: [OnceLock<String>; 11],
}

impl IdList {
    /// `build` makes the statement from the list of id parameters, which start at `$first`.
    pub(super) const fn new(first: usize, build: fn(&str) -> String) -> Self {
        Self {
            build,
            first,
            sizes: [const { OnceLock::new() }; 11],
        }
    }

    /// The statement for `n` ids (1 ≤ `n` ≤ [`MAX_ID_LIST`]) and its number of id parameters.
    pub(super) fn statement(&self, n: usize) -> (&str, usize) {
        // The lanes cap their batches at MAX_ID_LIST; more ids would not all be bound.
        debug_assert!(n <= MAX_ID_LIST, "{n} ids for one statement");
        let size = n.clamp(1, MAX_ID_LIST).next_power_of_two();
        let sql = self.sizes[size.trailing_zeros() as usize].get_or_init(|| {
            let params: Vec<String> = (self.first..self.first + size)
                .map(|i| format!("${i}"))
                .collect();
            (self.build)(&params.join(", "))
        });
        (sql, size)
    }

    /// Every size's statement with its total number of parameters, for plan checks.
    pub(super) fn all(&self) -> Vec<(&str, usize)> {
        (0..self.sizes.len())
            .map(|bits| self.statement(1 << bits))
            .map(|(sql, ids)| (sql, ids + self.first - 1))
            .collect()
    }

    /// `ids` padded to `size` by repeating the last one.
    pub(super) fn padded<T: Copy>(ids: &[T], size: usize) -> impl Iterator<Item = T> + '_ {
        (0..size).filter_map(move |i| ids.get(i.min(ids.len().saturating_sub(1))).copied())
    }
}
