//! Statement coalescing for [`super::PgSessionStore`]: concurrent calls of one kind (create,
//! save, load) are gathered and sent as ONE multi-row statement, one round trip and one commit
//! for the lot, instead of one statement and one commit each.
//!
//! Nothing waits on a timer. Up to `lanes` statements of a kind run at once; a call that
//! finds a free slot starts its statement at once, and the calls that arrive while every slot
//! is busy queue up and go together into the next statement that starts (the way
//! PostgreSQL's group commit gathers WAL flushes). A lone caller gets a statement of one;
//! under load the statements grow by themselves.
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
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Calls waiting per lane before callers wait to enqueue.
const QUEUE: usize = 1024;

/// What a lane answers a caller.
pub(super) enum Answer<Q, R> {
    /// The multi-row statement ran; this is the caller's share of its result.
    Done(R),
    /// The statement failed: run the single-row statement instead (the request comes back).
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

struct Job<Q, R> {
    row: Uuid,
    request: Q,
    reply: oneshot::Sender<Answer<Q, R>>,
}

/// The coalescer of one kind of statement: a dispatcher task and its queue.
pub(super) struct Lanes<Q, R> {
    queue: mpsc::Sender<Job<Q, R>>,
}

impl<Q, R> fmt::Debug for Lanes<Q, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lanes").finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, R: Send + 'static> Lanes<Q, R> {
    /// Spawns the dispatcher on the current tokio runtime: at most `lanes` statements in
    /// flight, each with at most `max_batch` requests. It ends when the `Lanes` is dropped
    /// and its last statement has answered.
    ///
    /// `exclusive`: calls for one row never share or overlap a statement (writes). Reads
    /// pass `false`: calls for one row may share a statement and each gets the row.
    pub(super) fn spawn(lanes: usize, max_batch: usize, exclusive: bool, exec: Exec<Q, R>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(
            rx,
            lanes.max(1),
            max_batch.max(1),
            exclusive,
            exec,
        ));
        Self { queue }
    }

    /// Runs `request` (on row `row`) in the next statement that has room for it.
    ///
    /// When the dispatcher is gone (its runtime shut down) the answer is `RunAlone`; if it
    /// went away while holding the request, it is `Failed` with [`sqlx::Error::WorkerCrashed`].
    pub(super) async fn submit(&self, row: Uuid, request: Q) -> Answer<Q, R> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            row,
            request,
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.queue.send(job).await {
            return Answer::RunAlone(job.request);
        }
        answer
            .await
            .unwrap_or(Answer::Failed(sqlx::Error::WorkerCrashed))
    }
}

/// Starts a statement whenever one of the `lanes` slots is free and requests are waiting;
/// when `exclusive`, a request whose row is in a running statement waits for it to end.
async fn dispatch<Q: Send + 'static, R: Send + 'static>(
    mut rx: mpsc::Receiver<Job<Q, R>>,
    lanes: usize,
    max_batch: usize,
    exclusive: bool,
    exec: Exec<Q, R>,
) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Vec<Uuid>>();
    let mut waiting: VecDeque<Job<Q, R>> = VecDeque::new();
    let mut busy: HashSet<Uuid> = HashSet::new();
    let mut running = 0usize;
    let mut open = true;
    loop {
        tokio::select! {
            job = rx.recv(), if open => match job {
                Some(job) => waiting.push_back(job),
                None => open = false,
            },
            Some(rows) = done.recv(), if running > 0 => {
                running -= 1;
                for row in rows {
                    busy.remove(&row);
                }
            }
            else => return,
        }
        while let Ok(job) = rx.try_recv() {
            waiting.push_back(job);
        }
        while running < lanes && !waiting.is_empty() {
            // Oldest first, one request per row, none on a row a running statement holds.
            let mut rows = Vec::new();
            let mut batch = Vec::new();
            let mut later = VecDeque::with_capacity(waiting.len());
            for job in waiting.drain(..) {
                if batch.len() < max_batch && (!exclusive || busy.insert(job.row)) {
                    if exclusive {
                        rows.push(job.row);
                    }
                    batch.push(job);
                } else {
                    later.push_back(job);
                }
            }
            waiting = later;
            if batch.is_empty() {
                break;
            }
            running += 1;
            let (exec, done_tx) = (exec.clone(), done_tx.clone());
            tokio::spawn(async move {
                run(&exec, batch).await;
                let _ = done_tx.send(rows);
            });
        }
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
        (requests, outcome) => {
            match outcome {
                Ok(_) => tracing::error!("coalesced statement answered the wrong number of rows"),
                Err(e) => {
                    tracing::debug!(error = %e, rows = n, "coalesced statement failed; running its rows one by one")
                }
            }
            for (reply, request) in replies.into_iter().zip(requests) {
                let _ = reply.send(Answer::RunAlone(request));
            }
        }
    }
}
