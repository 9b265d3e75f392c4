//! The scalar oracle (being written).
