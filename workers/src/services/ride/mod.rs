//! The ride service (being written).
