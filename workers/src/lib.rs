//! Media worker pools. Filled in by the media issue; nothing here pretends to work yet.
