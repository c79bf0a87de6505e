//! The notification service (being written).
