//! Group commit of sends: concurrent accepted sends are written together, one
//! transaction and one set-based statement for all their rows and jobs, and each
//! request is answered after that commit. A 202 is as durable as before (the commit is
//! synchronous); what is shared is the commit's flush, the statement's overhead and the
//! round trip.
//!
//! Batches form by themselves, with no timer: a few writer tasks take turns at the
//! queue, each taking everything waiting (up to [`MAX_BATCH`]) while the others write.
//! A send arriving on an idle system is written at once, alone; under load, sends
//! queue while a batch commits and go together in the next. (Kafka's `linger.ms` waits
//! for a batch to fill; here the wait is the commit in progress, so no one waits for
//! nothing.)
//!
//! A batch that fails is written again one send at a time, each in its own statement,
//! so a send that cannot be written fails alone and never sinks its neighbours; a batch
//! that fails because the database is unreachable answers every send with that at once. Only
//! sends that need nothing else in their transaction come here (no `Idempotency-Key`,
//! template, files or project to read): the others keep their own transaction.

use std::sync::Arc;

use commcenter_shared::domain::communications::{outbound, outbound::Prepared};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::health::connection_lost;

/// Sends written in one transaction at most.
pub const MAX_BATCH: usize = 256;
/// Writer tasks: one writes while the next gathers.
pub const WRITERS: usize = 2;
/// Sends waiting for a writer, at most; beyond it a send waits to join the queue.
const QUEUE: usize = 4 * MAX_BATCH;

type Recorded = sqlx::Result<outbound::Recorded>;

struct Waiting {
    send: Prepared,
    answer: oneshot::Sender<Recorded>,
}

/// The sends' writer: clone the handle, call [`GroupCommit::record`].
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Waiting>,
}

impl GroupCommit {
    /// Starts the writers on `pool`; they end when every handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(pool.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// Writes the send with whatever others are waiting, and answers once they are
    /// committed: its row and its job's id.
    pub async fn record(&self, send: Prepared) -> Recorded {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { send, answer };
        if self.queue.send(waiting).await.is_err() {
            return Err(sqlx::Error::PoolClosed); // shutting down
        }
        answered.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

/// One writer: takes its turn at the queue, takes all that waits, writes it.
async fn write_batches(pool: PgPool, waiting: Arc<Mutex<mpsc::Receiver<Waiting>>>) {
    loop {
        let batch = {
            let mut queue = waiting.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        write(&pool, batch).await;
    }
}

async fn write(pool: &PgPool, batch: Vec<Waiting>) {
    let (sends, answers): (Vec<Prepared>, Vec<_>) =
        batch.into_iter().map(|w| (w.send, w.answer)).unzip();
    for (answer, recorded) in answers.into_iter().zip(write_batch(pool, &sends).await) {
        // A request that went away meanwhile: its send stands, as any 202's.
        let _ = answer.send(recorded);
    }
}

/// Writes the sends in one transaction; if that fails, each alone, so each gets its
/// own outcome. Answers in the order given. When the database cannot be reached, every
/// send gets that answer at once: writing them one by one would only make each of the
/// batch wait out the pool in turn.
pub async fn write_batch(pool: &PgPool, sends: &[Prepared]) -> Vec<Recorded> {
    match together(pool, sends).await {
        Ok(recorded) => recorded.into_iter().map(Ok).collect(),
        Err(error) if sends.len() == 1 => vec![Err(error)],
        Err(error) if unreachable(&error) => {
            let mut answers: Vec<Recorded> = (1..sends.len())
                .map(|_| Err(same_trouble(&error)))
                .collect();
            answers.insert(0, Err(error));
            answers
        }
        Err(error) => {
            tracing::debug!(%error, sends = sends.len(), "a batch of sends failed; writing them one at a time");
            let mut recorded = Vec::with_capacity(sends.len());
            for send in sends {
                recorded.push(alone(pool, send).await);
            }
            recorded
        }
    }
}

/// The database did not answer: the batch is not at fault, and neither is any send.
fn unreachable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::PoolTimedOut) || connection_lost(error)
}

/// The same trouble for another send of the batch (a `sqlx::Error` is not `Clone`),
/// answered as the original is: 503 with `Retry-After`.
fn same_trouble(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        other => sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            other.to_string(),
        )),
    }
}

async fn together(pool: &PgPool, sends: &[Prepared]) -> sqlx::Result<Vec<outbound::Recorded>> {
    let mut tx = pool.begin().await?;
    let recorded = outbound::record_many(&mut tx, sends).await?;
    tx.commit().await?;
    Ok(recorded)
}

async fn alone(pool: &PgPool, send: &Prepared) -> Recorded {
    let mut tx = pool.begin().await?;
    let recorded = outbound::record_prepared(&mut tx, send).await?;
    tx.commit().await?;
    Ok(recorded)
}
