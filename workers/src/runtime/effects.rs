//! Effects: calls to the outside world (a card gateway, a message channel) that never run
//! while a database transaction is open.
//!
//! A service declares an effect where its state makes one due ([`BatchOutput::effects`],
//! [`Settled::effects`]): the runtime records it in the same transaction as the input that
//! caused it (the inbox entry, the state change and "this call is due" commit together). After
//! commit any replica performs it ([`Worker::perform`]), many at once, each attempt with a
//! timeout and the effect's id as the operation's idempotency key; a transient failure is
//! retried with a growing delay until the effect's deadline. The outcome is recorded in a
//! second transaction ([`Worker::settle`]), which changes the service's state, emits the
//! events that announce the outcome and forgets the effect. A crash between the two leaves the
//! effect recorded: it is performed again, with the same idempotency key, once its claim
//! expires, and a gateway that already performed it answers with the same result.
//!
//! [`BatchOutput::effects`]: super::BatchOutput::effects
//! [`Worker::perform`]: super::Worker::perform
//! [`Worker::settle`]: super::Worker::settle

use ridesaga_schemas::{Envelope, MessageId, RideId, Timestamp, TraceContext};

/// A call to the outside world a service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// Unique and stable for the operation: its idempotency key at the outside party (e.g.
    /// `r_1/hold`). Recording an id that is already recorded keeps the first.
    pub id: String,
    /// What the service calls it, e.g. `payment.hold`: logs, metrics, `ridectl`.
    pub kind: String,
    /// The saga it belongs to.
    pub saga_id: Option<RideId>,
    /// What the call needs, as the service serialised it (JSON).
    pub request: String,
    /// The span that made it due (the runtime sets it: the span processing the input, or
    /// performing the effect, whose outcome made it due); its attempts are spans under it.
    pub trace: Option<TraceContext>,
}

impl Effect {
    /// The `traceparent` it is stored with.
    pub fn traceparent(&self) -> Option<String> {
        self.trace.as_ref().map(TraceContext::traceparent)
    }

    /// The `tracestate` it is stored with.
    pub fn tracestate(&self) -> Option<&str> {
        self.trace.as_ref().and_then(|t| t.state.as_deref())
    }
}

/// An effect as the runtime hands it back to the service to perform and to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEffect {
    pub effect: Effect,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the effect was recorded.
    pub recorded_at: Timestamp,
    /// After this instant a transient failure is no longer retried: the effect settles as
    /// [`EffectOutcome::GaveUp`].
    pub deadline: Timestamp,
}

/// Why one attempt at an effect failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    /// A timeout, an outage: the same call may succeed later (with the same idempotency key).
    #[error("transient: {0}")]
    Transient(String),
    /// The outside party answered and refused; asking again gets the same answer.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// How an effect ended, for [`Worker::settle`](super::Worker::settle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectOutcome {
    /// Performed; the service's own serialisation of the result (JSON).
    Done(String),
    /// Refused for good ([`EffectError::Permanent`]).
    Failed(String),
    /// Failed transiently until its deadline passed; the last error.
    GaveUp(String),
}

/// An effect that ended, and how, for [`Worker::settle`](super::Worker::settle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub effect: PendingEffect,
    pub outcome: EffectOutcome,
}

/// What settling effects' outcomes produced, besides the service's own writes (which it makes
/// on the connection it is given).
#[derive(Debug, Default)]
pub struct Settled {
    /// Events that announce the outcomes.
    pub outputs: Vec<Envelope>,
    /// Effects the outcomes make due (recorded in the same transaction).
    pub effects: Vec<Effect>,
}

impl PendingEffect {
    /// An event announcing this effect's outcome, from `producer`: its id derives from the
    /// effect's id and the event's type, so settling the same effect again (after a crash)
    /// emits the same message, which the stream's duplicate window and the consumers' inboxes
    /// drop.
    pub fn event(
        &self,
        message: impl Into<ridesaga_schemas::Message>,
        correlation_id: &str,
        producer: &str,
        now: Timestamp,
    ) -> Envelope {
        let message = message.into();
        let mut envelope = Envelope::new(message, self.effect.saga_id.clone(), producer);
        envelope.id =
            MessageId::derive_from_key(&format!("effect/{}/{}", self.effect.id, envelope.kind()));
        envelope.occurred_at = now;
        envelope.correlation_id = correlation_id.to_owned();
        envelope
    }
}
