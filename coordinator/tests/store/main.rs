//! The store conformance suite: every operation the HTTP API and the
//! background tasks use, called on `Store` directly, with its result and
//! the dashboard aggregates checked after each scenario; and each schema
//! invariant tried directly and seen refused.
//!
//! The suite opens its store through [`fixture::open`], which picks the
//! backend from `WASM_AT_HOME_TEST_DATABASE` (`sqlite`, the default), so a
//! second backend runs the same tests unchanged.

mod account_age;
mod bans;
mod claims;
mod fairshare;
mod fixture;
mod heartbeats;
mod invariants;
mod lifecycle;
mod liveness;
mod outputs;
mod reconcile;
mod submitters;
mod trust;
