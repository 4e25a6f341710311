//! What operators and auditors do: the API and wgctl, policies, recordings and the recorded
//! fixture.

mod api;
mod fixture_recording;
mod permissions;
mod policy;
mod recording;
