//! The Triggerfish runtime: thin async drivers around `triggerfish-core`.
