//! `switchboard-notifier`: see the library crate for what it does.

fn main() -> std::process::ExitCode {
    switchboard::service::main(switchboard::Role::Notifier, switchboard_notifier::run)
}
