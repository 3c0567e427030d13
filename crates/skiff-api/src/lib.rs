//! Pure API machinery of Skiff: no async, no I/O.
//!
//! - [`registry`]: the served resources (group/version/kind/resource, scope, short
//!   names, verbs, subresources) and their storage keys.
//! - [`selector`]: label and field selectors.
//! - [`patch`]: strategic merge patch.
//! - [`defaults`]: defaulting of built-in types.
//! - [`validation`]: decoding against the built-in types and validation.
//! - [`quantity`]: resource quantities.
//! - [`events`]: building core/v1 Events.
//! - [`table`]: server-side `Table` printing for `kubectl get`.
//! - [`autoscaling`]: HorizontalPodAutoscaler defaults and v1 <-> v2 conversion.
#![deny(missing_docs)]

pub mod autoscaling;
pub mod bootstrap_token;
pub mod crd;
pub mod defaults;
pub mod events;
pub mod limit_range;
pub mod managed_fields;
pub mod patch;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod resource_list;
pub mod selector;
pub mod table;
pub mod validation;
