//! The fraud service (being written).
