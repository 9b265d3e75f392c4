//! Unit tests of the backend against naive f64 loops.
