//! What a job is and how it runs on one machine: orchestration files, inline arguments, job
//! specs and fingerprints, components, templating, the local cache and the executor.
//!
//! Not built yet: this crate is the home of the jobs work (see the project's open issues).
