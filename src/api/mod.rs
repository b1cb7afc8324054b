//! The object machinery every component shares: the resource registry, `Status` errors,
//! metadata helpers, selectors, patches, defaulting, validation, cron schedules and table
//! printing.
//!
//! Objects are `serde_json::Value`s here; typed k8s-openapi structs are used only to check
//! shapes and to generate schemas. Nothing in this room performs I/O.

pub mod convert;
pub mod cron;
pub mod decode;
pub mod defaults;
pub mod duplicates;
pub mod field_error;
pub mod field_selector;
pub mod meta;
pub mod node_labels;
pub mod patch;
pub mod quantity;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod status;
pub mod table;
pub mod validation;
