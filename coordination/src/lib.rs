//! What nodes say to each other about jobs, as sans-IO state machines: the originator's run
//! tracker, JOB_WAIT and QUERY relays, blob fetch scheduling.
//!
//! Not built yet: this crate is the home of the coordination work (see the project's open issues).
