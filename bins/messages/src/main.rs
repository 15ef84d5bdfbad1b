//! `switchboard-messages`: see the library crate for what it does.

fn main() -> std::process::ExitCode {
    switchboard::service::main(switchboard::Role::Messages, switchboard_messages::run)
}
