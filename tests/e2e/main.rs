//! End-to-end tests: the real binaries, the real broker and database, the official
//! `socket.io-client`. One test binary; one module per area (STYLE practice 7).

mod asyncapi;
mod bad_input;
mod browser;
mod chat;
mod dashboard;
mod deploy;
mod domain;
mod edge;
mod foundation;
mod ingress;
mod loadgen;
mod matches;
mod newcomer;
mod openapi;
mod overload;
mod presence;
mod reference;
mod roles;
mod tls;
mod trace;
mod typescript;
