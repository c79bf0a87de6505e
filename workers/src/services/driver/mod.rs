//! The driver service (being written).
