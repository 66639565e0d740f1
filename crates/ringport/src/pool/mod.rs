//! Worker pool (being written).
