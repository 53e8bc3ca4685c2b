//! The scaling harness (`directord-mesh-sim`): many nodes in one process, scenarios, metrics.
//!
//! Not built yet: see the project's open issues.
