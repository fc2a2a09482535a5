//! The resource model: Knative's YAML documents, parsed and validated.
