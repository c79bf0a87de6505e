//! `ridectl ride refund <RIDE> [--amount] [--reason] [--id]`: publishes `cmd.payment.refund`
//! (payment owns refunds) and waits for the payment service's answer about that refund id:
//! `evt.payment.refunded`, or `evt.payment.refund_refused` with the reason (exit 1). The answer
//! is looked for from the ride's first message, so a refund asked for again with its id shows
//! the answer it got the first time.

use async_nats::jetstream::consumer::DeliverPolicy;
use ridesaga_schemas::{
    Envelope, Message, MessageKind, PaymentRefundRefused, PaymentRefunded, RefundId, RefundRide,
    money, subject_for,
};
use serde::Serialize;
use tokio::time::timeout;

use super::Ctx;
use super::driver::Published;
use super::ride::ensure_ride_exists;
use crate::cli::RefundArgs;
use crate::exit::{HintExt, TimedOut};
use crate::nats::follow;

/// The payment service's answer to a refund.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Refunded(PaymentRefunded),
    Refused(PaymentRefundRefused),
}

/// The answer about `refund_id` in `message`, if it is one.
pub fn answer(message: &Message, refund_id: &RefundId) -> Option<Answer> {
    match message {
        Message::PaymentRefunded(m) if m.refund_id == *refund_id => {
            Some(Answer::Refunded(m.clone()))
        }
        Message::PaymentRefundRefused(m) if m.refund_id == *refund_id => {
            Some(Answer::Refused(m.clone()))
        }
        _ => None,
    }
}

/// What `ride refund` prints as JSON.
#[derive(Debug, Serialize)]
struct Report<'a> {
    ride_id: &'a str,
    refund_id: &'a str,
    /// `refunded` or `refused`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded: Option<&'a PaymentRefunded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<&'a PaymentRefundRefused>,
}

/// Why a refund was not made: exit code 1 with the payment service's reason.
#[derive(Debug)]
pub struct RefundRefused(pub PaymentRefundRefused);

impl std::fmt::Display for RefundRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refund {} refused ({}): {}",
            self.0.refund_id, self.0.code, self.0.reason
        )
    }
}

impl std::error::Error for RefundRefused {}

pub async fn run(ctx: &Ctx, args: RefundArgs) -> anyhow::Result<()> {
    let ride = args.ride;
    let refund_id = args.id.unwrap_or_else(RefundId::generate);
    let command = RefundRide {
        refund_id: refund_id.clone(),
        amount_cents: args.amount,
        reason: args.reason,
    };
    let envelope = Envelope::new(command, Some(ride.clone()), "ridectl");
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    ensure_ride_exists(&stream, &ride).await?;
    let ack = nats.publish(&envelope).await?;
    if args.no_wait {
        if ctx.out.is_json() {
            let mut value = serde_json::to_value(Published::new(&envelope, &ack))?;
            value["ride_id"] = ride.to_string().into();
            value["refund_id"] = refund_id.to_string().into();
            return ctx.out.json(&value);
        }
        ctx.out.line(format!(
            "published {} (stream seq {}), refund {refund_id}",
            envelope.subject(),
            ack.sequence
        ));
        return Ok(());
    }
    let filters = [
        subject_for(MessageKind::PaymentRefunded, ride.as_str()),
        subject_for(MessageKind::PaymentRefundRefused, ride.as_str()),
    ];
    let mut feed = follow(&stream, &filters, DeliverPolicy::All).await?;
    let next = async {
        while let Some(record) = feed.next().await? {
            if let Some(found) = record
                .step()
                .and_then(|step| answer(&step.envelope.message, &refund_id))
            {
                return Ok(found);
            }
        }
        anyhow::bail!("the stream feed ended before the refund's answer arrived")
    };
    let found = match timeout(args.timeout, next).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(TimedOut {
                waiting_for: format!("the answer to refund {refund_id} of ride {ride}"),
                after: args.timeout,
                last_seen: "the command is stored but payment has not answered".into(),
            })
            .hint("is the payment worker running? Check with `ridectl services`");
        }
    };
    let report = Report {
        ride_id: ride.as_str(),
        refund_id: refund_id.as_str(),
        outcome: match found {
            Answer::Refunded(_) => "refunded",
            Answer::Refused(_) => "refused",
        },
        refunded: match &found {
            Answer::Refunded(m) => Some(m),
            Answer::Refused(_) => None,
        },
        refused: match &found {
            Answer::Refused(m) => Some(m),
            Answer::Refunded(_) => None,
        },
    };
    if ctx.out.is_json() {
        ctx.out.json(&report)?;
    } else if let Answer::Refunded(m) = &found {
        let reversal = m.reversal.as_ref().map_or(String::new(), |r| {
            format!(
                "; ledger: driver {} -{}, commission -{}",
                r.driver_id,
                money::format(r.driver_cents),
                money::format(r.commission_cents)
            )
        });
        ctx.out.line(format!(
            "refund {refund_id} of ride {ride}: {} refunded ({} of {} captured refunded){reversal}",
            money::format(m.amount_cents),
            money::format(m.refunded_cents),
            money::format(m.captured_cents)
        ));
    }
    match found {
        Answer::Refunded(_) => Ok(()),
        Answer::Refused(m) => Err(RefundRefused(m).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridesaga_schemas::RiderId;

    #[test]
    fn only_the_answer_about_the_refund_id_counts() {
        let id = RefundId::parse("rf_1").unwrap();
        let refused = |refund: &str| {
            Message::PaymentRefundRefused(PaymentRefundRefused {
                refund_id: RefundId::parse(refund).unwrap(),
                rider_id: Some(RiderId::parse("u_1").unwrap()),
                amount_cents: Some(5),
                code: "exceeds_capture".into(),
                reason: "no".into(),
            })
        };
        assert_eq!(answer(&refused("rf_2"), &id), None);
        let Some(Answer::Refused(found)) = answer(&refused("rf_1"), &id) else {
            panic!()
        };
        let text = RefundRefused(found).to_string();
        assert_eq!(text, "refund rf_1 refused (exceeds_capture): no");
    }
}
