//! Each service's consumer, as provisioned (`Service::consumer_config`), against what its worker
//! handles (`Worker::handles`): a filter that delivers a kind of message the worker does not
//! handle, a kind the worker handles that no filter delivers, or a filter subject that delivers
//! nothing the worker handles, fails.

use std::collections::BTreeSet;

use ridesaga_schemas::{MessageKind, Service};
use ridesaga_workers::config::Settings;
use ridesaga_workers::runtime::Worker;
use ridesaga_workers::services::{
    driver::DriverService, fraud::FraudService, notification::NotificationService,
    payment::PaymentService, ride::RideService,
};

/// What the worker of `service`, loaded with default settings as `app::run` loads it, handles.
fn handled(service: Service) -> &'static [MessageKind] {
    let settings = Settings::from_pairs(Vec::<(String, String)>::new());
    let loads = "the service loads with default settings";
    match service {
        Service::Ride => RideService::load(&settings).expect(loads).handles(),
        Service::Driver => DriverService::load(&settings).expect(loads).handles(),
        Service::Fraud => FraudService::load(&settings).expect(loads).handles(),
        Service::Payment => PaymentService::load(&settings).expect(loads).handles(),
        Service::Notification => NotificationService::load(&settings).expect(loads).handles(),
    }
}

/// Whether NATS delivers `subject` to a consumer filtering on `filter` (`*` one token, `>` the
/// rest).
fn matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (token, Some(s)) if token == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// A subject a message of `kind` is published on (its prefix and an id).
fn subject_of(kind: MessageKind) -> String {
    format!("{}.k1", kind.as_str())
}

/// What is wrong between `filters` and the kinds `handled`, one line each; empty if they agree.
fn mismatches(filters: &[String], handled: &[MessageKind]) -> Vec<String> {
    let delivered: BTreeSet<MessageKind> = MessageKind::ALL
        .iter()
        .copied()
        .filter(|&kind| filters.iter().any(|f| matches(f, &subject_of(kind))))
        .collect();
    let handled: BTreeSet<MessageKind> = handled.iter().copied().collect();
    let mut out = Vec::new();
    for kind in delivered.difference(&handled) {
        out.push(format!("{kind} is delivered and not handled"));
    }
    for kind in handled.difference(&delivered) {
        out.push(format!("{kind} is handled and not delivered"));
    }
    for filter in filters {
        if !handled
            .iter()
            .any(|&kind| matches(filter, &subject_of(kind)))
        {
            out.push(format!("{filter} delivers nothing that is handled"));
        }
    }
    out
}

#[test]
fn each_consumer_delivers_exactly_what_its_worker_handles() {
    for service in Service::ALL {
        let filters = service.consumer_config().filter_subjects;
        assert!(!filters.is_empty(), "{service}: no filter");
        let wrong = mismatches(&filters, handled(service));
        assert!(wrong.is_empty(), "{service}:\n  {}", wrong.join("\n  "));
    }
}

#[test]
fn a_filter_or_a_handler_out_of_step_is_reported_in_both_directions() {
    let filters = Service::Fraud.consumer_config().filter_subjects;
    let handles = handled(Service::Fraud);

    let mut wider = filters.clone();
    wider.push("evt.payment.captured.*".to_owned());
    assert_eq!(
        mismatches(&wider, handles),
        [
            "evt.payment.captured is delivered and not handled",
            "evt.payment.captured.* delivers nothing that is handled",
        ]
    );

    let narrower: Vec<String> = filters
        .iter()
        .filter(|f| f.as_str() != "evt.ride.completed.*")
        .cloned()
        .collect();
    assert_eq!(narrower.len(), filters.len() - 1);
    assert_eq!(
        mismatches(&narrower, handles),
        ["evt.ride.completed is handled and not delivered"]
    );

    let misspelt: Vec<String> = filters
        .iter()
        .map(|f| f.replace("evt.payment.declined.*", "evt.payment.decline.*"))
        .collect();
    assert_eq!(
        mismatches(&misspelt, handles),
        [
            "evt.payment.declined is handled and not delivered",
            "evt.payment.decline.* delivers nothing that is handled",
        ]
    );
}

#[test]
fn subjects_match_filters_as_nats_does() {
    assert!(matches("cmd.ride.*.*", "cmd.ride.request.r1"));
    assert!(!matches("cmd.ride.*.*", "cmd.ride.request"));
    assert!(!matches("cmd.ride.*", "cmd.ride.request.r1"));
    assert!(matches("evt.>", "evt.ride.completed.r1"));
    assert!(!matches("evt.>", "evt"));
    assert!(!matches("evt.ride.completed.*", "evt.ride.cancelled.r1"));
}
