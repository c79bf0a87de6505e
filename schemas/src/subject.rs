//! Subject builders and parsers: commands are `cmd.<domain>.<verb>.<id>`, events
//! `evt.<domain>.<fact>.<id>`, so one filter (`*.*.*.<id>`) finds every message of a saga.

use crate::ids::{IdError, validate_token};
use crate::messages::MessageKind;

/// Why a subject is not one of ours.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject {0:?} does not have the form <cmd|evt>.<domain>.<name>.<id>")]
    Shape(String),
    #[error("subject {0:?} has a type this build does not know")]
    UnknownType(String),
    #[error("subject id: {0}")]
    Id(#[from] IdError),
}

/// Splits a subject into its message type and its id.
pub fn parse_subject(subject: &str) -> Result<(MessageKind, &str), SubjectError> {
    let (prefix, id) = subject
        .rsplit_once('.')
        .ok_or_else(|| SubjectError::Shape(subject.into()))?;
    if prefix.split('.').count() != 3 {
        return Err(SubjectError::Shape(subject.into()));
    }
    let kind =
        MessageKind::parse(prefix).ok_or_else(|| SubjectError::UnknownType(subject.into()))?;
    validate_token("subject id", id)?;
    Ok((kind, id))
}

/// The subject of a message of `kind` about `id`.
pub fn subject_for(kind: MessageKind, id: &str) -> String {
    format!("{kind}.{id}")
}

/// The filter that matches every message of one saga.
pub fn saga_filter(ride_id: &str) -> String {
    format!("*.*.*.{ride_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_subjects_and_refuses_others() {
        assert_eq!(
            parse_subject("evt.ride.requested.r_1").unwrap(),
            (MessageKind::RideRequested, "r_1")
        );
        assert!(matches!(
            parse_subject("evt.ride.r_1"),
            Err(SubjectError::Shape(_))
        ));
        assert!(matches!(
            parse_subject("evt.ride.flew.r_1"),
            Err(SubjectError::UnknownType(_))
        ));
        assert!(matches!(
            parse_subject("evt.ride.requested.*"),
            Err(SubjectError::Id(_))
        ));
        assert_eq!(
            subject_for(MessageKind::StartRide, "r_9"),
            "cmd.ride.start.r_9"
        );
    }

    #[test]
    fn every_kind_round_trips_through_its_subject() {
        for kind in MessageKind::ALL {
            let subject = subject_for(*kind, "x1");
            assert_eq!(parse_subject(&subject).unwrap(), (*kind, "x1"));
        }
    }
}
