//! Test fixtures: a synthetic saga log built from payloads, as the workers would publish it.

use super::*;
use ridesaga_schemas::*;

/// Builds steps for `ride`, one second apart, in the order given.
#[derive(Debug, Clone)]
pub struct Log {
    pub ride: RideId,
    pub steps: Vec<Step>,
    pub start: OffsetDateTime,
}

impl Log {
    pub fn new(ride: &str) -> Log {
        Log {
            ride: RideId::parse(ride).unwrap(),
            steps: Vec::new(),
            start: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    pub fn push(&mut self, message: impl Into<Message>, producer: &str) -> &mut Log {
        let message = message.into();
        let saga = match message.kind().key_kind() {
            KeyKind::Ride => Some(self.ride.clone()),
            _ => None,
        };
        let envelope = Envelope::new(message, saga, producer);
        let n = self.steps.len() as i64;
        self.steps.push(Step {
            seq: n as u64 + 1,
            time: self.start + time::Duration::seconds(n),
            envelope,
            trace: None,
        });
        self
    }

    pub fn rider() -> RiderId {
        RiderId::parse("u_1").unwrap()
    }

    pub fn driver(id: &str) -> DriverId {
        DriverId::parse(id).unwrap()
    }

    /// When the next step will be stored.
    pub fn next_at(&self) -> OffsetDateTime {
        self.start + time::Duration::seconds(self.steps.len() as i64)
    }

    /// `seconds` after the next step, as a timestamp in a payload.
    fn in_seconds(&self, seconds: i64) -> Timestamp {
        Timestamp(self.next_at() + time::Duration::seconds(seconds))
    }

    pub fn requested(&mut self) -> &mut Log {
        let p = GeoPoint::new(52.5, 13.4).unwrap();
        self.push(
            RequestRide {
                rider_id: Self::rider(),
                pickup: p,
                dropoff: p,
                payment_token: "tok_visa".into(),
            },
            "ridectl",
        );
        self.push(
            RideRequested {
                rider_id: Self::rider(),
                pickup: p,
                dropoff: p,
                payment_token: "tok_visa".into(),
                estimated_distance_km: 3.0,
                estimated_fare_cents: 1200,
                match_deadline: self.in_seconds(30),
                expires_at: Some(self.in_seconds(45)),
            },
            "ride",
        )
    }

    pub fn cleared(&mut self) -> &mut Log {
        self.push(
            FraudCleared {
                rider_id: Self::rider(),
                score: 1,
                reasons: vec![],
            },
            "fraud",
        )
    }

    pub fn assigned(&mut self, driver: &str) -> &mut Log {
        self.push(
            DriverAssigned {
                rider_id: Self::rider(),
                driver_id: Self::driver(driver),
                driver_name: "Ada".into(),
                pickup_distance_km: 0.5,
            },
            "driver",
        )
    }

    pub fn authorized(&mut self, cents: u64) -> &mut Log {
        self.push(
            PaymentAuthorized {
                rider_id: Self::rider(),
                hold_id: format!("h_{}", self.ride),
                amount_cents: cents,
            },
            "payment",
        )
    }

    /// Confirmed with the default pickup deadline, 20 minutes.
    pub fn confirmed(&mut self, driver: &str) -> &mut Log {
        self.push(
            RideConfirmed {
                rider_id: Self::rider(),
                driver_id: Self::driver(driver),
                estimated_fare_cents: 1200,
                pickup_deadline: Some(self.in_seconds(20 * 60)),
            },
            "ride",
        )
    }

    /// The driver arrived; the rider wait is the default, 5 minutes.
    pub fn arrived(&mut self, driver: &str) -> &mut Log {
        self.push(
            DriverArrived {
                rider_id: Self::rider(),
                driver_id: Self::driver(driver),
                rider_wait_deadline: self.in_seconds(5 * 60),
            },
            "ride",
        )
    }

    pub fn started(&mut self, driver: &str) -> &mut Log {
        self.push(
            RideStarted {
                rider_id: Self::rider(),
                driver_id: Self::driver(driver),
            },
            "ride",
        )
    }

    pub fn completed(&mut self, driver: &str, fare: u64) -> &mut Log {
        self.push(
            RideStarted {
                rider_id: Self::rider(),
                driver_id: Self::driver(driver),
            },
            "ride",
        );
        self.push(
            RideCompleted {
                rider_id: Self::rider(),
                driver_id: Self::driver(driver),
                distance_km: 3.0,
                duration_min: 9.0,
                fare_cents: fare,
                distance_source: DistanceSource::Reported,
                route_points: 0,
                fare: None,
                route: None,
            },
            "ride",
        )
    }

    pub fn captured(&mut self, cents: u64) -> &mut Log {
        self.push(
            PaymentCaptured {
                rider_id: Self::rider(),
                hold_id: format!("h_{}", self.ride),
                amount_cents: cents,
                earnings: None,
                fare: None,
            },
            "payment",
        )
    }

    pub fn voided(&mut self, cents: u64) -> &mut Log {
        self.push(
            PaymentVoided {
                rider_id: Self::rider(),
                hold_id: format!("h_{}", self.ride),
                amount_cents: cents,
            },
            "payment",
        )
    }

    pub fn cancelled(&mut self, reason: CancelReason, driver: Option<&str>) -> &mut Log {
        self.push(
            RideCancelled {
                rider_id: Self::rider(),
                reason,
                driver_id: driver.map(Self::driver),
            },
            "ride",
        )
    }

    pub fn released(&mut self, driver: &str) -> &mut Log {
        self.push(
            DriverReleased {
                driver_id: Self::driver(driver),
                reason: "ride cancelled".into(),
            },
            "driver",
        )
    }

    pub fn notified(&mut self, kind: NotificationKind, recipient: Recipient) -> &mut Log {
        self.push(
            NotificationSent {
                recipient,
                recipient_id: "u_1".into(),
                kind,
                channel: "log".into(),
                text: "hello".into(),
                refund_id: None,
            },
            "notification",
        )
    }

    /// The rider told of the refund `refund_id`.
    pub fn notified_refund(&mut self, refund_id: &str) -> &mut Log {
        self.push(
            NotificationSent {
                recipient: Recipient::Rider,
                recipient_id: "u_1".into(),
                kind: NotificationKind::Refund,
                channel: "log".into(),
                text: "refunded".into(),
                refund_id: Some(RefundId::parse(refund_id).unwrap()),
            },
            "notification",
        )
    }

    pub fn saga(&self) -> Saga {
        Saga::fold(self.ride.as_str(), &self.steps)
    }
}
