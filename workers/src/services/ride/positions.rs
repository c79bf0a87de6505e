//! Routes from the positions stream: the ride worker follows `RIDESAGA_POSITIONS` with its
//! `ride-positions` consumer beside its saga consumer, and adds each position of a driver who
//! has a ride in progress to that ride's route. A batch of positions is recorded in one
//! transaction in the writer's turn and acknowledged after it commits; a position delivered
//! again carries a stream sequence the route has already passed, so it adds nothing. A position
//! the stream stored before the ride started belongs to the way to the pickup, however late
//! it is read: only positions stored from the start on make the route.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use ridesaga_schemas::streams::{POSITION_STREAM, RIDE_POSITIONS_CONSUMER};
use ridesaga_schemas::{DriverId, Position};
use tokio_util::sync::CancellationToken;

use super::store::{self, RoutePoint};
use crate::runtime::{Conn, Database, HandleError};

/// Positions fetched and recorded per transaction.
const BATCH: usize = 256;
/// How long a fetch waits for positions before the loop looks at `stop` again.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Pause before binding again after the stream, the consumer or the database failed.
const RETRY: Duration = Duration::from_secs(2);

/// One position read from the stream: its stream sequence, driver and body.
#[derive(Debug, Clone)]
pub struct Reported {
    pub seq: u64,
    /// When the positions stream stored it (the server's clock, Unix ms).
    pub stored_at_ms: i64,
    pub driver_id: DriverId,
    pub position: Position,
}

/// Follows the positions stream until `stop`, binding (again) to the consumer whenever it is
/// missing or the connection fails.
pub async fn follow(js: jetstream::Context, database: Database, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let bound = async {
            let stream = js
                .get_stream(POSITION_STREAM)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            stream
                .get_consumer::<pull::Config>(RIDE_POSITIONS_CONSUMER)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        let result = match bound.await {
            Ok(consumer) => consume(&consumer, &database, &stop).await,
            Err(e) => Err(e.context(format!(
                "binding to {RIDE_POSITIONS_CONSUMER} on {POSITION_STREAM} (run `ridectl provision`)"
            ))),
        };
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "positions: retrying");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

async fn consume(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    database: &Database,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    while !stop.is_cancelled() {
        let mut batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(FETCH_WAIT)
            .messages()
            .await?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| anyhow::anyhow!("fetching positions: {e}"))?);
        }
        if messages.is_empty() {
            continue;
        }
        let mut reported = Vec::with_capacity(messages.len());
        let mut keep = Vec::with_capacity(messages.len());
        for message in messages {
            let seq = message
                .info()
                .map(|i| (i.stream_sequence, unix_ms(i.published)));
            match (seq, Position::decode(&message.subject, &message.payload)) {
                (Ok((seq, stored_at_ms)), Ok((driver_id, position))) => {
                    reported.push(Reported {
                        seq,
                        stored_at_ms,
                        driver_id,
                        position,
                    });
                    keep.push(message);
                }
                (_, Err(e)) => {
                    tracing::warn!(subject = %message.subject, error = %e, "position refused");
                    ack(&message, AckKind::Term).await;
                }
                (Err(e), _) => {
                    tracing::warn!(subject = %message.subject, error = %e, "position without metadata");
                    ack(&message, AckKind::Term).await;
                }
            }
        }
        let recorded = database
            .transaction(async |conn| record_all(conn, &reported).await)
            .await
            .map_err(|e| anyhow::anyhow!("recording {} positions: {e}", reported.len()))?;
        tracing::debug!(positions = reported.len(), recorded, "positions recorded");
        for message in &keep {
            ack(message, AckKind::Ack).await;
        }
    }
    Ok(())
}

/// `at` in Unix milliseconds.
fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        // Redelivered after the ack wait; the route's sequence drops it then.
        tracing::debug!(error = %e, "position not acknowledged");
    }
}

/// Adds each position to the route of its driver's ride in progress, if any; returns how many
/// were recorded.
pub async fn record_all(conn: &mut Conn<'_>, reported: &[Reported]) -> Result<usize, HandleError> {
    let mut recorded = 0;
    for item in reported {
        let Some(store::StartedRide {
            ride_id,
            started_at_ms,
            route,
        }) = store::started_ride_of(conn, &item.driver_id).await?
        else {
            continue;
        };
        if item.stored_at_ms < started_at_ms {
            continue;
        }
        let point = item
            .position
            .point()
            .map_err(|e| HandleError::Permanent(e.to_string()))?;
        let Some(route) = route.record(item.seq, point, item.position.at_ms) else {
            continue;
        };
        store::record_point(
            conn,
            RoutePoint {
                ride_id: &ride_id,
                route: &route,
                point,
                at_ms: item.position.at_ms,
            },
        )
        .await?;
        recorded += 1;
    }
    Ok(recorded)
}
