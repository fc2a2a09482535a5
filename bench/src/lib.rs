//! Shared fixtures for the benches and the load generator.
