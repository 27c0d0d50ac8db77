//! kubewire's answers: the cluster model in plain types, the record
//! compiler, the revisioned deltas that carry compiled answers to the
//! serving cores, and the per-core answer table that serves them.
//!
//! This crate depends on neither kube, k8s-openapi, serde nor tokio: the
//! query path cannot reach them. The Kubernetes adapter (watchers and the
//! conversions from API objects) lives in the server's `sources`.
//!
//! ```text
//! k8s objects --model--> Compiler --Delta(Upsert/Remove) / Reset--> DeltaHub --> AnswerTable (one per core)
//! ```
//!
//! The per-core [`AnswerTable`] answers a query with [`AnswerTable::respond`]:
//! a pure function of the query bytes and the table.

#![forbid(unsafe_code)]

pub mod compiler;
pub mod entry;
pub mod hub;
pub mod keyed;
pub mod model;
pub mod names;
pub mod pods;
pub mod selector;
pub mod settings;
pub mod table;
pub mod update;

pub use compiler::{Compiler, ObjectChange, ObjectCounts};
pub use entry::{NameEntry, TableKey, ZoneAnswers, Zones};
pub use hub::{AppliedAt, CoreStatus, DeltaHub, DeltaReceiver};
pub use model::{Kind, ListedKeys, Object, ObjectKey};
pub use names::NameIndex;
pub use settings::{ExternalZones, PodMode, Settings};
pub use table::{AnswerTable, Response};
pub use update::{Change, Delta, PodAddress, Snapshot, Update};
