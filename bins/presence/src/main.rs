//! `switchboard-presence`: see the library crate for what it does.

fn main() -> std::process::ExitCode {
    switchboard::service::main(switchboard::Role::Presence, switchboard_presence::run)
}
