//! Fake RingCentral and Gmail servers.
