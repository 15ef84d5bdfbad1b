//! The load scenarios, one module each; each returns its figures as a serializable report.

pub mod chat;
pub mod coldstart;
pub mod connections;
pub mod fanout;
pub mod presence;
