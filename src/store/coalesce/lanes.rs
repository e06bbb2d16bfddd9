//! The scheduler: concurrent calls of one kind (a session read, a tower-sessions create, save
//! or load) are gathered and sent as ONE multi-row statement, one round trip and one commit
//! for the lot, instead of one statement and one commit each.
//!
//! Nothing waits on a timer. Up to `lanes` statements of a kind run at once, each in a task of
//! its own. A call queues, and if a slot is free it starts a statement for the queue. Before
//! gathering, the statement's task yields to the runtime twice, so every task that is ready
//! to run goes first: among them, the callers the previous statement just answered, whose
//! next requests then join this statement instead of waiting a whole statement for the next
//! one. When a statement ends, the calls that queued meanwhile go together into the next one
//! (the way PostgreSQL's group commit gathers WAL flushes). A lone caller gets a statement of
//! one, two scheduler passes later; under load the statements grow by themselves.
//!
//! Measured on the store at 8 closed-loop tasks (`docs/benchmarks-history.md`): with a caller on a
//! free slot running its statement at once, the tasks split into cohorts of 2–3 rows per
//! statement that waited for each other's statements; with the yields, a statement carries
//! all 8.
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
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use uuid::Uuid;

/// What a caller gets back.
enum Answer<Q, R> {
    /// The statement ran; this is the caller's share of its result.
    Done(R),
    /// A multi-row statement failed, or there is no tokio runtime to run statements on: run
    /// the single-row statement instead (the request comes back).
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

    /// Runs `request` (on row `row`) in the next statement that has room for it, and waits
    /// for its answer. When a slot is free, that statement starts now, in a task of its own.
    async fn submit(&self, row: Uuid, request: Q) -> Answer<Q, R> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No tokio runtime to run a statement's task on: the caller runs its own.
            return Answer::RunAlone(request);
        };
        let inner = &self.inner;
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = inner.lock();
            state.waiting.push_back(Job {
                row,
                request,
                reply,
            });
            inner.claim(&mut state)
        };
        if start {
            inner.start(&runtime);
        }
        answer
            .await
            .unwrap_or(Answer::Failed(sqlx::Error::WorkerCrashed))
    }
}

impl<Q: Send + 'static, R: Send + 'static> Lanes<Q, R> {
    /// [`Lanes::submit`], then, when told to run alone, `alone` (the single-row statement)
    /// with the request.
    pub(super) async fn call<F, Fut>(
        &self,
        row: Uuid,
        request: Q,
        alone: F,
    ) -> Result<R, sqlx::Error>
    where
        F: FnOnce(Q) -> Fut,
        Fut: Future<Output = Result<R, sqlx::Error>>,
    {
        match self.submit(row, request).await {
            Answer::Done(r) => Ok(r),
            Answer::Failed(e) => Err(e),
            Answer::RunAlone(request) => alone(request).await,
        }
    }
}

/// A statement answered another number of rows than it was given: a bug, reported as an
/// error to every caller (never rerun: the statement may have written).
fn miscounted() -> sqlx::Error {
    tracing::error!("coalesced statement answered the wrong number of rows");
    sqlx::Error::Protocol("coalesced statement answered the wrong number of rows".to_owned())
}

/// A multi-row statement whose columns are not those its rows decode into: a bug of the
/// statement, the same for every row, so every caller gets the error (a copy of it). Running
/// each request alone instead would hide it behind single-row statements and lose the
/// coalescing unnoticed.
fn statement_bug(e: &sqlx::Error) -> Option<sqlx::Error> {
    match e {
        sqlx::Error::ColumnNotFound(column) => Some(sqlx::Error::ColumnNotFound(column.clone())),
        sqlx::Error::ColumnIndexOutOfBounds { index, len } => {
            Some(sqlx::Error::ColumnIndexOutOfBounds {
                index: *index,
                len: *len,
            })
        }
        _ => None,
    }
}

/// How many times a statement's task lets the runtime run every other ready task before it
/// gathers its batch. The callers the previous statement just answered are among them: a
/// web handler writes its response, a client loop sends its next request, and whatever they
/// submit joins this statement instead of waiting for the one after it.
const GATHER_YIELDS: usize = 2;

impl<Q: Send + 'static, R: Send + 'static> Inner<Q, R> {
    fn lock(&self) -> MutexGuard<'_, State<Q, R>> {
        // A panic while holding the lock leaves consistent counters (no code between the
        // updates can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new statement if one is free and a call waits for it.
    fn claim(&self, state: &mut State<Q, R>) -> bool {
        if state.running < self.lanes && !state.waiting.is_empty() {
            state.running += 1;
            true
        } else {
            false
        }
    }

    /// Starts a statement on a claimed slot: its task yields [`GATHER_YIELDS`] times, then
    /// takes the waiting calls (oldest first, one per row for `exclusive`, none on a row a
    /// running statement holds, at most `max_batch`) and runs them. Spawned, so that a
    /// caller that goes away never cancels a statement that carries other callers' requests.
    fn start(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        // The slot is given back however the task ends, including when a shutting-down
        // runtime drops it unpolled.
        let mut slot = Slot {
            inner: self.clone(),
            rows: Vec::new(),
            turn: Turn::Dropped,
        };
        runtime.spawn(async move {
            for _ in 0..GATHER_YIELDS {
                tokio::task::yield_now().await;
            }
            let batch = {
                let mut state = slot.inner.lock();
                slot.inner.gather(&mut state, &mut slot.rows)
            };
            if batch.is_empty() {
                slot.turn = Turn::Empty;
                drop(slot);
            } else {
                slot.turn = Turn::Ran;
                run(&slot.inner.exec, batch).await;
            }
        });
    }

    /// The waiting calls that go into the next statement; the rows they hold (`exclusive`)
    /// are added to `rows` and marked busy.
    fn gather(&self, state: &mut State<Q, R>, rows: &mut Vec<Uuid>) -> Vec<Job<Q, R>> {
        let mut batch = Vec::new();
        let mut later = VecDeque::with_capacity(state.waiting.len());
        for job in std::mem::take(&mut state.waiting) {
            if batch.len() < self.max_batch && (!self.exclusive || state.busy.insert(job.row)) {
                if self.exclusive {
                    rows.push(job.row);
                }
                batch.push(job);
            } else {
                later.push_back(job);
            }
        }
        state.waiting = later;
        batch
    }

    /// A statement's slot is given back: frees its rows, and starts the next statement if
    /// calls wait (see [`Turn`] for when it does not), or as many as the queue fills while
    /// slots are free.
    fn finish(self: &Arc<Self>, rows: &[Uuid], turn: Turn) {
        let starts = {
            let mut state = self.lock();
            state.running -= 1;
            for row in rows {
                state.busy.remove(row);
            }
            let restart = match turn {
                Turn::Ran => true,
                Turn::Empty => state.running == 0,
                Turn::Dropped => false,
            };
            let wanted = if restart {
                state.waiting.len().div_ceil(self.max_batch)
            } else {
                0
            };
            let mut starts = 0;
            while starts < wanted && self.claim(&mut state) {
                starts += 1;
            }
            starts
        };
        if starts > 0 {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => (0..starts).for_each(|_| self.start(&runtime)),
                // No runtime left to run them (shutting down): the waiting callers get
                // `WorkerCrashed` when the lanes are dropped.
                Err(_) => self.lock().running -= starts,
            }
        }
    }
}

/// How a statement's task ended, which decides whether its end starts the next statement.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Dropped before it ran (a shutting-down runtime): nothing is started after it, or a
    /// dying runtime would be handed one task after another.
    Dropped,
    /// Found nothing to run: another statement took the calls, or every waiting call is on a
    /// row a running statement holds. The next statement is started by the last one to end,
    /// so empty gathers do not chase each other while a statement holds the rows.
    Empty,
    /// Ran a statement: the calls that queued meanwhile go into the next one.
    Ran,
}

/// A statement's slot; dropping it ends the statement's turn.
struct Slot<Q: Send + 'static, R: Send + 'static> {
    inner: Arc<Inner<Q, R>>,
    /// Rows the statement holds (`exclusive`).
    rows: Vec<Uuid>,
    turn: Turn,
}

impl<Q: Send + 'static, R: Send + 'static> Drop for Slot<Q, R> {
    fn drop(&mut self) {
        self.inner.finish(&self.rows, self.turn);
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
        (_, Err(e)) if statement_bug(&e).is_some() => {
            tracing::error!(error = %e, rows = n, "coalesced statement does not match its rows");
            for reply in replies {
                if let Some(e) = statement_bug(&e) {
                    let _ = reply.send(Answer::Failed(e));
                }
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

#[cfg(test)]
mod tests {
    //! The scheduling alone, with a statement that only records what it was given and takes
    //! a moment (a timer) like a round trip would. What the statements do in the database is
    //! tested against PostgreSQL in `tests/api`.
    use std::time::Duration;

    use super::*;

    /// The batches a statement was given, in order.
    type Log = Arc<Mutex<Vec<Vec<u32>>>>;

    /// Lanes whose statement records each batch (its requests, in order) and answers each
    /// request with itself.
    fn recording(lanes: usize, max_batch: usize) -> (Lanes<u32, u32>, Log) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let exec: Exec<u32, u32> = Arc::new(move |requests: Vec<u32>| {
            log.lock().expect("log").push(requests.clone());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let answers = requests.clone();
                (requests, Ok(answers))
            })
        });
        (Lanes::new(lanes, max_batch, true, exec), seen)
    }

    fn answer(a: Answer<u32, u32>) -> u32 {
        match a {
            Answer::Done(v) => v,
            Answer::RunAlone(_) => panic!("told to run alone"),
            Answer::Failed(e) => panic!("failed: {e}"),
        }
    }

    /// Eight callers in a closed loop (each sends its next request as soon as it has its
    /// answer) share the statements: the answered callers queue again before the next
    /// statement gathers. On a multi-threaded runtime (a spawned task runs before the tasks
    /// it woke), without the yields before gathering, they split into cohorts that alternate
    /// statements.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answered_callers_join_the_next_statement() {
        let (lanes, seen) = recording(1, 64);
        let lanes = Arc::new(lanes);
        let mut tasks = Vec::new();
        for task in 0..8u32 {
            let lanes = lanes.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..20u32 {
                    let request = task * 100 + round;
                    let row = Uuid::from_u128(u128::from(task));
                    assert_eq!(answer(lanes.submit(row, request).await), request);
                }
            }));
        }
        for t in tasks {
            t.await.expect("caller task");
        }
        let sizes: Vec<usize> = seen.lock().expect("log").iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 160);
        // 20 statements of 8 when every answered caller makes it back in time; on two
        // worker threads one sometimes misses a statement (21 in 1 of 4 runs). Callers
        // that start statements at once split into cohorts: 35 to 40 statements.
        assert!(sizes.len() <= 28, "statement sizes: {sizes:?}");
    }

    /// Calls for one row never share a statement and run in the order they came; a call for
    /// another row joins the first statement.
    #[tokio::test]
    async fn calls_for_one_row_run_one_after_the_other() {
        let (lanes, seen) = recording(2, 64);
        let lanes = Arc::new(lanes);
        let (x, y) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let calls = [(x, 1), (x, 2), (x, 3), (y, 4)];
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(row, request)| {
                let lanes = lanes.clone();
                tokio::spawn(async move { answer(lanes.submit(row, request).await) })
            })
            .collect();
        for (t, (_, request)) in tasks.into_iter().zip(calls) {
            assert_eq!(t.await.expect("caller task"), request);
        }
        assert_eq!(
            *seen.lock().expect("log"),
            vec![vec![1, 4], vec![2], vec![3]]
        );
    }

    /// A statement whose columns do not match its rows fails every caller in it (nobody is
    /// sent to run alone, which would hide the bug); another failure of a multi-row statement
    /// sends each caller to run alone.
    #[tokio::test]
    async fn a_statement_bug_fails_every_caller_and_other_errors_run_alone() {
        for (bug, expect_alone) in [(true, false), (false, true)] {
            let exec: Exec<u32, u32> = Arc::new(move |requests: Vec<u32>| {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let e = if bug {
                        sqlx::Error::ColumnNotFound("x".to_owned())
                    } else {
                        sqlx::Error::RowNotFound
                    };
                    (requests, Err(e))
                })
            });
            let lanes = Arc::new(Lanes::new(1, 64, true, exec));
            let tasks: Vec<_> = (0..4u32)
                .map(|request| {
                    let lanes = lanes.clone();
                    let row = Uuid::from_u128(u128::from(request));
                    tokio::spawn(async move { lanes.submit(row, request).await })
                })
                .collect();
            let mut alone = 0;
            for t in tasks {
                match t.await.expect("caller task") {
                    // A statement of one hands back its error as the caller's own.
                    Answer::RunAlone(_) | Answer::Failed(sqlx::Error::RowNotFound) => alone += 1,
                    Answer::Failed(sqlx::Error::ColumnNotFound(_)) => {}
                    Answer::Failed(e) => panic!("unexpected error {e}"),
                    Answer::Done(_) => panic!("a failed statement answered"),
                }
            }
            if expect_alone {
                assert_eq!(alone, 4);
            } else {
                assert_eq!(alone, 0);
            }
        }
    }

    /// At most `max_batch` calls per statement; the rest go into the next one.
    #[tokio::test]
    async fn batches_are_capped() {
        let (lanes, seen) = recording(1, 3);
        let lanes = Arc::new(lanes);
        let tasks: Vec<_> = (0..7u32)
            .map(|request| {
                let lanes = lanes.clone();
                let row = Uuid::from_u128(u128::from(request));
                tokio::spawn(async move { answer(lanes.submit(row, request).await) })
            })
            .collect();
        for t in tasks {
            t.await.expect("caller task");
        }
        assert_eq!(
            *seen.lock().expect("log"),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
    }
}
