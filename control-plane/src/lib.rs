//! kubewire's control plane: the cluster model, the record compiler, and the
//! revisioned deltas that carry compiled answers to the serving cores.
//!
//! ```text
//! k8s objects --model--> Compiler --Delta(Upsert/Remove) / Reset--> DeltaHub --> AnswerTable (one per core)
//! ```
//!
//! The per-core [`AnswerTable`] answers a query with [`AnswerTable::respond`]:
//! a pure function of the query bytes and the table.

#![forbid(unsafe_code)]

pub mod compiler;
pub mod delta;
pub mod entry;
pub mod model;
pub mod pods;
pub mod settings;
pub mod table;
pub mod watch;

pub use compiler::{Compiler, ObjectChange, ObjectCounts};
pub use delta::{Change, CoreStatus, Delta, DeltaHub, DeltaReceiver, PodAddress, Snapshot, Update};
pub use entry::{NameEntry, ZoneAnswers, Zones};
pub use model::{Kind, ListedKeys, Object, ObjectKey};
pub use settings::{PodMode, Settings};
pub use table::{AnswerTable, Response};
