//! What a job is and how it runs on one machine: orchestration files, inline arguments, job
//! specs and fingerprints, components, templating, the local cache and the executor.
//!
//! Nothing here knows about peers or the network.

pub mod cache;
pub mod components;
pub mod executor;
pub mod inline;
pub mod orchestration;
pub mod processes;
pub mod spec;
pub mod template;
pub mod transfer;
pub mod yaml_text;

pub use spec::{Component, Fingerprint, JobSpec, ParseOutcome, Verb};
