//! Emits one event to a user's sockets from a Rust backend.
//!
//! ```sh
//! cargo run -p switchboard --example emit -- alice greeting '{"text":"hello"}'
//! ```

use switchboard::{Bus, Config, Role, Shutdown, backend};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(user), Some(event)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: emit <userId> <event> [json data]");
    };
    let data: serde_json::Value = serde_json::from_str(&args.next().unwrap_or_else(|| "null".into()))?;
    let config = Config::load(Role::Backend)?;
    let shutdown = Shutdown::new();
    let bus = Bus::start(&config, "switchboard-emit-example", &shutdown);
    if tokio::time::timeout(std::time::Duration::from_secs(10), bus.wait_ready()).await.is_err() {
        anyhow::bail!("the broker is unreachable");
    }
    let user = user.parse()?;
    backend::emit_to_user(&bus, &user, &event, data).await?;
    println!("emitted {event} to {user}");
    bus.close().await;
    Ok(())
}
