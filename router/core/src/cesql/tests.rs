//! Tests across the modules: end-to-end semantics, constraints, properties.
