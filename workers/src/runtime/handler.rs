//! The contract between the shared runtime and a service: what a service implements, and how
//! its errors decide the fate of the message that caused them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ridesaga_schemas::{Envelope, RideId, Service, Timestamp, TraceContext};
use sqlx::migrate::Migrator;

use super::db::{self, Conn, Kind, Row};
use super::effects::{Effect, EffectError, Finished, PendingEffect, Settled};
use super::errors;
use super::metrics::{SagaDeadlines, SagaOutcome};

/// What a handler failure means for the input message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying later (a gateway timeout, a busy database): the message is nak'ed with a
    /// delay that grows with its delivery count, up to the consumer's max_deliver.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (a message no state machine accepts): the message goes to the
    /// dead-letter path with this reason and is terminated.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The database failed: transient or permanent as [`HandleError::is_transient`] tells
    /// from the error itself (a busy database passes later, a broken constraint never does).
    #[error("database: {0}")]
    Database(#[source] Arc<sqlx::Error>),
}

impl HandleError {
    /// Whether the input may pass if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            HandleError::Transient(_) => true,
            HandleError::Permanent(_) => false,
            HandleError::Database(e) => errors::is_transient(e),
        }
    }

    /// What went wrong, without the verdict: the reason a dead letter or a retry gives.
    pub fn reason(&self) -> String {
        match self {
            HandleError::Transient(reason) | HandleError::Permanent(reason) => reason.clone(),
            HandleError::Database(_) => self.to_string(),
        }
    }
}

/// A database error as it is: whether it is transient is decided when its input is answered.
impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        HandleError::Database(Arc::new(e))
    }
}

/// A service's logic as the runtime sees it. Implementations keep no state in memory between
/// calls: everything lives in the service's database, reached through `conn`, which is inside
/// the transaction that also records the input in the inbox and the outputs in the outbox, on
/// whichever backend ([`Kind`]) the service runs.
pub trait Worker: Send + Sync + 'static {
    /// Which service this is (consumer name, producer field, metrics label).
    fn service(&self) -> Service;

    /// The kinds of message the service reacts to: exactly what its consumer's filter
    /// (`Service::filter_subjects`) must deliver (a test holds the five services to it). None
    /// for a worker on a stream of its own (tests, benchmarks).
    fn handles(&self) -> &'static [ridesaga_schemas::MessageKind] {
        &[]
    }

    /// The service's own tables on `kind`. Versions start at 100: lower versions belong to the
    /// runtime's tables (inbox, outbox), which share the database and the migrations table.
    fn migrator(&self, kind: Kind) -> &'static Migrator;

    /// Applies one input and returns the messages to publish. Called at most once per message
    /// id that commits (the runtime's inbox check runs first in the same transaction).
    fn handle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a;

    /// Applies the inputs of one batch, in order, and returns each one's outputs (in the same
    /// order) and the writes to run in the round trip that commits the batch. Every input is
    /// new (the runtime has checked the inbox), and an input sees the effects of the ones
    /// before it.
    ///
    /// The default runs the service's [`Worker::preload`] statement, if it has one, and
    /// hands its rows to [`Worker::handle_preloaded`]; without one, it applies one input after
    /// another with [`Worker::handle`]. A service that applies a batch whole loads the state of
    /// the whole batch in one statement and saves it with [`BatchWrite`]s, so a batch costs
    /// the same few round trips to the database whatever its size; its `handle` is then
    /// [`handle_as_batch`].
    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [Input<'a>],
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        async move {
            match self.preload(conn.kind()) {
                Some(sql) => {
                    let rows = db::preload_rows(conn, sql, self.preload_parameter(inputs))
                        .await
                        .map_err(|e| BatchError::Batch(e.into()))?;
                    self.handle_preloaded(conn, inputs, rows).await
                }
                None => handle_one_by_one(self, conn, inputs).await,
            }
        }
    }

    /// The statement that reads the state a batch's inputs touch on `kind`, if the service has
    /// one: its only parameter (SQLite's positional `?`) is [`Worker::preload_parameter`] of the batch's
    /// inputs (by default the JSON array of their saga ids). The runtime runs it in the round
    /// trip that opens the batch's transaction and hands its rows to
    /// [`Worker::handle_preloaded`], so the batch costs one round trip to the database fewer. A
    /// service that has one implements `handle_preloaded`. The text must be the same from one
    /// batch to the next (it is prepared once).
    fn preload(&self, kind: Kind) -> Option<&str> {
        let _ = kind;
        None
    }

    /// The parameter of [`Worker::preload`] for `inputs`: the JSON array of their saga ids
    /// ([`saga_ids`]) unless the service needs more of each input than its saga (a rider, a
    /// time window). It may be given inputs the batch then does not apply (repeats, inputs
    /// already in the inbox): rows for them must do no harm.
    fn preload_parameter(&self, inputs: &[Input<'_>]) -> String {
        saga_ids(inputs)
    }

    /// [`Worker::handle_batch`] with the rows of [`Worker::preload`] already read, in the same
    /// transaction. The default ignores them and applies one input after another.
    fn handle_preloaded<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [Input<'a>],
        rows: Vec<Row>,
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        let _ = rows;
        handle_one_by_one(self, conn, inputs)
    }

    /// Performs an effect this service declared: the call to the outside world, with the
    /// effect's id as its idempotency key. No transaction is open; the runtime bounds how many
    /// run at once and how long each may take, and retries a transient failure until the
    /// effect's deadline. Returns the result as the service will read it in
    /// [`Worker::settle`].
    fn perform<'a>(
        &'a self,
        effect: &'a PendingEffect,
    ) -> impl Future<Output = Result<String, EffectError>> + Send + 'a {
        async move {
            Err(EffectError::Permanent(format!(
                "{} performs no effects (asked for {})",
                self.service(),
                effect.effect.kind
            )))
        }
    }

    /// Records how a group of effects ended, in order: changes the service's state through
    /// `conn` (inside the transaction that also forgets the effects and stores the outputs),
    /// and returns the events that announce the outcomes and the effects they make due. Every
    /// effect in `finished` was still recorded (none is settled twice). A service settles a
    /// group in a fixed number of statements whatever its size; an outcome it cannot settle is
    /// [`BatchError::Input`] with its index (the group is redone without it).
    fn settle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        finished: &'a [Finished],
        now: Timestamp,
    ) -> impl Future<Output = Result<Settled, BatchError>> + Send + 'a {
        let _ = (conn, now);
        async move {
            Err(BatchError::Input {
                index: 0,
                error: HandleError::Permanent(format!(
                    "{} settles no effects ({} finished)",
                    self.service(),
                    finished.len()
                )),
            })
        }
    }

    /// Work the service does beside its saga consumer until `stop` is cancelled, e.g. following
    /// a stream of its own; none by default. The runtime spawns it with its background tasks.
    fn side_loop(
        &self,
        js: async_nats::jetstream::Context,
        database: db::Database,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
        let _ = (js, database, stop);
        None
    }

    /// The terminal states (and reasons) of a saga this service counts in
    /// `ridesaga_sagas_finished_total`: a fixed set, so that the labels stay bounded. None by
    /// default: only the service that knows a saga's end declares them.
    fn saga_outcomes(&self) -> &'static [SagaOutcome] {
        &[]
    }

    /// Which of [`Worker::saga_outcomes`] an output of this service (its subject and payload,
    /// just committed) announces, if it ends a saga. Called for every output of an input or a
    /// timer: a service returns at once for the subjects that end nothing.
    fn saga_outcome(&self, subject: &str, payload: &[u8]) -> Option<usize> {
        let _ = (subject, payload);
        None
    }

    /// The sagas waiting on this service's deadlines (read every few seconds, outside the
    /// writer's turn, for the metrics), if the service keeps deadlines; none by default.
    fn saga_deadlines<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<SagaDeadlines>, sqlx::Error>> + Send + 'a {
        let _ = (conn, now);
        async { Ok(None) }
    }

    /// Runs due timers (deadlines, retries). Called periodically by every replica, each time in
    /// its own transaction; outputs must carry ids derived from stable keys
    /// (`MessageId::derive_from_key`) so replicas that race emit identical messages.
    fn tick<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        let _ = (conn, now);
        async { Ok(Vec::new()) }
    }
}

/// One input of a batch and the time it is applied at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub envelope: &'a Envelope,
    pub now: Timestamp,
    /// The span processing it, when the runtime has one: an effect the input makes due
    /// carries it ([`Effect::trace`]), so that the call and its outcome stay in the input's
    /// trace. (An effect without one gets the span of an input of its saga.)
    pub trace: Option<&'a TraceContext>,
}

/// Applies `inputs` one after another with [`Worker::handle`]. Boxed: a service whose `handle`
/// is [`handle_as_batch`] and whose `handle_batch` is the default would otherwise make a future
/// that contains itself.
fn handle_one_by_one<'a, W: Worker + ?Sized>(
    worker: &'a W,
    conn: &'a mut Conn<'_>,
    inputs: &'a [Input<'a>],
) -> Pin<Box<dyn Future<Output = Result<BatchOutput, BatchError>> + Send + 'a>> {
    Box::pin(async move {
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = worker.handle(conn, input.envelope, input.now).await;
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        Ok(BatchOutput {
            outputs,
            writes: Vec::new(),
            effects: Vec::new(),
        })
    })
}

/// The saga ids of `inputs` (duplicates kept), as the JSON array a [`Worker::preload`]
/// statement expands.
pub fn saga_ids(inputs: &[Input<'_>]) -> String {
    let ids: Vec<&str> = inputs
        .iter()
        .filter_map(|input| input.envelope.saga_id.as_ref().map(RideId::as_str))
        .collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned())
}

/// What [`Worker::handle_batch`] did.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Each input's outputs, in the order of the inputs.
    pub outputs: Vec<Vec<Envelope>>,
    /// Statements the runtime runs, in order, in the round trip that commits the batch.
    pub writes: Vec<BatchWrite>,
    /// Calls to the outside world the batch made due: recorded when it commits, performed
    /// after (see [`super::effects`]).
    pub effects: Vec<Effect>,
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// This input failed: the batch is rolled back, the input answered with `error`, and the
    /// batch redone without it.
    #[error("input {index}: {error}")]
    Input { index: usize, error: HandleError },
    /// Nothing in the batch can be applied now (the database failed): every input is answered
    /// with `0` if it may pass later; if not, the batch is redone one input at a time, so that
    /// the input at fault is the only one refused.
    #[error("batch: {0}")]
    Batch(HandleError),
}

/// A write that a service leaves for the round trip that commits its batch: one statement
/// whose only parameter, a positional `?`, is a JSON array of rows (which the statement
/// expands with `jsonb_each`: see the runtime store's statements for why not `json_each`).
/// The statement's text is the same for any number of rows, so it is prepared once.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchWrite {
    sql: &'static str,
    rows: String,
}

impl BatchWrite {
    /// `sql` with `rows` as its JSON array.
    pub fn new<T: serde::Serialize>(sql: &'static str, rows: &[T]) -> Result<Self, HandleError> {
        let rows = serde_json::to_string(rows)
            .map_err(|e| HandleError::Permanent(format!("rows of a write: {e}")))?;
        Ok(BatchWrite { sql, rows })
    }

    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// The JSON array bound to the statement's parameter.
    pub fn rows(&self) -> &str {
        &self.rows
    }

    /// Runs the write on its own (in a timer, or for a batch of one).
    pub async fn execute(&self, conn: &mut Conn<'_>) -> Result<(), sqlx::Error> {
        db::execute(conn, self).await
    }
}

/// [`Worker::handle`] for a service that implements [`Worker::handle_batch`]: applies `input` as
/// a batch of one and runs its writes at once. An input that makes effects due is refused
/// (nothing here would record them).
pub async fn handle_as_batch<W: Worker>(
    worker: &W,
    conn: &mut Conn<'_>,
    input: &Envelope,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    let inputs = [Input {
        envelope: input,
        now,
        trace: None,
    }];
    let done = worker
        .handle_batch(conn, &inputs)
        .await
        .map_err(|e| match e {
            BatchError::Input { error, .. } | BatchError::Batch(error) => error,
        })?;
    // `handle` has nowhere to record effects: a service whose batches make calls to the outside
    // world is applied through `handle_batch`, which the runtime uses.
    if !done.effects.is_empty() {
        return Err(HandleError::Permanent(format!(
            "applying {} alone made {} effects due; apply it in a batch",
            input.kind(),
            done.effects.len()
        )));
    }
    let answered = done.outputs.len();
    let Ok([outputs]) = <[Vec<Envelope>; 1]>::try_from(done.outputs) else {
        return Err(HandleError::Permanent(format!(
            "the service answered {answered} inputs for a batch of one"
        )));
    };
    for write in &done.writes {
        write.execute(conn).await?;
    }
    Ok(outputs)
}
