//! `switchboard-edge`: see the library crate for what it does.

fn main() -> std::process::ExitCode {
    switchboard::service::main(switchboard::Role::Edge, switchboard_edge::run)
}
