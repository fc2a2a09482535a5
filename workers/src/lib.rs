//! Media worker pools (placeholder docs, filled in below).

pub mod decode;
pub mod infer;
pub mod limits;
pub mod native;
pub mod pipelines;
pub mod raster;
pub mod store;
