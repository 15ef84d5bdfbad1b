//! The database roles of `deploy/k8s` (issue 17's deploy hardening) against the real
//! PostgreSQL: the development overlay's `postgres-init.yaml` is run as the superuser (as the
//! PostgreSQL container runs it), each binary then runs with its own role as the overlay's
//! secrets give it (the messages worker alone migrating), a message, a match and a presence
//! change go through, and each role is refused what it must not do.

use std::{io::Write, process::Stdio, time::Duration};

use serde_json::json;
use sqlx::Connection;
use switchboard_tests::{Bin, Driver, Running, TestEnv, as_user, eventually};

const INIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/k8s/overlays/dev/postgres-init.yaml");

/// The `roles.sql` of the ConfigMap, for `database`, with roles named `<database>_<binary>` so
/// that tests in parallel (roles are cluster-wide) never meet.
fn roles_sql(database: &str) -> String {
    let yaml = std::fs::read_to_string(INIT).expect("read postgres-init.yaml");
    let block = yaml.split_once("  roles.sql: |\n").expect("a roles.sql key").1;
    let sql: Vec<&str> = block
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect();
    let sql = sql.join("\n");
    assert!(sql.contains("CREATE ROLE switchboard_edge"), "roles.sql as expected:\n{sql}");
    sql.replace("switchboard_", &format!("{database}_"))
        .replace("DATABASE switchboard", &format!("DATABASE {database}"))
}

/// Runs `sql` in `database` as the `postgres` superuser, over its local socket (peer
/// authentication, as `deploy/services.sh` does; the tests run as root, or with sudo).
fn as_superuser(database: &str, sql: &str) {
    if let Err(error) = try_as_superuser(database, sql) {
        panic!("psql as postgres failed: {error}");
    }
}

fn try_as_superuser(database: &str, sql: &str) -> Result<(), String> {
    let root =
        std::process::Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    let mut command = if root {
        std::process::Command::new("runuser")
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.arg("-n").arg("runuser");
        sudo
    };
    let mut child = command
        .args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql as postgres (runuser, or sudo -n runuser)");
    child.stdin.take().expect("stdin").write_all(sql.as_bytes()).expect("write the SQL");
    let output = child.wait_with_output().expect("psql finishes");
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

/// The test's roles, dropped at its end (roles outlive databases), before its database goes.
struct Roles(String);

impl Drop for Roles {
    fn drop(&mut self) {
        let roles = ["messages", "presence", "notifier", "edge"]
            .map(|binary| format!("{}_{binary}", self.0))
            .join(", ");
        if let Err(error) =
            try_as_superuser(&self.0, &format!("DROP OWNED BY {roles} CASCADE; DROP ROLE {roles};"))
        {
            eprintln!("could not drop the test's roles: {error}");
        }
    }
}

fn url(env: &TestEnv, binary: &str) -> String {
    let password = binary;
    format!("postgres://{}_{binary}:{password}@127.0.0.1:5432/{}", env.name, env.name)
}

/// What `role` gets for `sql`: `Ok` or PostgreSQL's SQLSTATE.
async fn attempt(env: &TestEnv, role: &str, sql: &str) -> Result<(), String> {
    let mut connection = sqlx::PgConnection::connect(&url(env, role)).await.expect("the role logs in");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut connection).await.map(drop).map_err(
        |error| error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned()).unwrap_or_default(),
    )
}

async fn spawn(env: &TestEnv, bin: Bin, role: &str, extra: &[(&str, &str)]) -> Running {
    let database_url = url(env, role);
    let migrate = if bin == Bin::Messages { "true" } else { "false" };
    let mut settings = vec![("DATABASE_URL", database_url.as_str()), ("DATABASE_MIGRATE", migrate)];
    settings.extend_from_slice(extra);
    env.spawn_ready(bin, &settings).await
}

#[tokio::test]
async fn each_binary_runs_with_its_own_role_and_no_role_can_do_more() {
    let env = TestEnv::new().await;
    as_superuser(&env.name, &roles_sql(&env.name));
    let _roles = Roles(env.name.clone());
    // The messages worker creates the schema; the others only use it.
    let messages = spawn(&env, Bin::Messages, "messages", &[]).await;
    let fast = [("PRESENCE_REPORT_INTERVAL_MS", "500"), ("PRESENCE_OFFLINE_GRACE_MS", "300")];
    let (presence, notifier, edge) = tokio::join!(
        spawn(&env, Bin::Presence, "presence", &fast),
        spawn(&env, Bin::Notifier, "notifier", &[]),
        spawn(&env, Bin::Edge, "edge", &fast)
    );
    // The host application's sessions (the edge only reads them).
    as_superuser(
        &env.name,
        "INSERT INTO sessions (token, user_id, expires_at) VALUES \
         ('alice-token', 'alice', now() + interval '1 hour'), ('bob-token', 'bob', now() + interval '1 hour');",
    );

    let (status, reply) =
        edge.post("/api/v1/matches", json!({ "matchId": "m-1", "userIds": ["alice", "bob"] })).await;
    assert_eq!(status, 202, "{reply}");
    let conversation = reply["conversationId"].as_str().expect("conversationId").to_owned();
    let mut driver = Driver::start().await;
    driver.connect("a", &edge.url(), as_user("alice")).await.expect("the edge reads alice's session");
    driver.connect("b", &edge.url(), as_user("bob")).await.expect("the edge reads bob's session");
    assert_eq!(driver.event("a", "notification:new").await["type"], "match");
    let send = json!({ "conversationId": conversation, "content": "hello" });
    assert_eq!(driver.emit_ack("a", "message:send", send).await["seq"], 1);
    assert_eq!(driver.event("b", "message:new").await["content"], "hello");
    let read = driver.emit_ack("b", "notifications:list", json!({})).await;
    let id = read["notifications"][0]["id"].clone();
    assert_eq!(driver.emit_ack("b", "notification:read", json!({ "id": id })).await["success"], true);
    driver.disconnect("b").await;
    let last_seen = eventually("presence stores bob's last_seen", Duration::from_secs(10), || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM last_seen WHERE user_id = 'bob'")
            .fetch_one(
                &mut sqlx::PgConnection::connect(&url(&env, "presence")).await.expect("presence logs in"),
            )
            .await
            .expect("presence reads last_seen");
        (count == 1).then_some(count)
    })
    .await;
    assert_eq!(last_seen, 1);

    // 42501: insufficient_privilege.
    let denied = Err("42501".to_owned());
    for (role, sql, expected) in [
        ("edge", "SELECT count(*) FROM sessions", Ok(())),
        (
            "edge",
            "INSERT INTO sessions (token, user_id, expires_at) VALUES ('x', 'x', now())",
            denied.clone(),
        ),
        ("edge", "SELECT count(*) FROM messages", denied.clone()),
        ("edge", "SELECT count(*) FROM notifications", denied.clone()),
        ("edge", "CREATE TABLE intruder (id int)", denied.clone()),
        ("presence", "SELECT count(*) FROM messages", denied.clone()),
        ("presence", "SELECT count(*) FROM sessions", denied.clone()),
        ("notifier", "SELECT count(*) FROM messages", denied.clone()),
        ("notifier", "DELETE FROM notifications", denied.clone()),
        ("notifier", "CREATE TABLE intruder (id int)", denied.clone()),
    ] {
        assert_eq!(attempt(&env, role, sql).await, expected, "{role}: {sql}");
    }
    drop((messages, presence, notifier, edge));
}
