//! Embedded engine (placeholder, being written).
