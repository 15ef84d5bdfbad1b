//! RabbitMQ's management HTTP API, for per-test vhosts and for looking at bindings and
//! connections the way an operator would.

use serde_json::Value;

#[derive(Clone)]
pub struct Admin {
    base: String,
    http: reqwest::Client,
}

/// A vhost name as it stands in a URL path (the management API's, or an AMQP URI's).
pub fn encode(vhost: &str) -> String {
    vhost.replace('%', "%25").replace('/', "%2F")
}

impl Admin {
    pub fn from_env() -> Admin {
        let base = std::env::var("SWITCHBOARD_TEST_RABBITMQ_API")
            .unwrap_or_else(|_| "http://127.0.0.1:15672/api".into());
        Admin { base, http: reqwest::Client::new() }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ management API unreachable (run deploy/services.sh): {e}"))
    }

    /// Creates a vhost and lets `guest` do everything in it.
    pub async fn create_vhost(&self, vhost: &str) {
        let v = encode(vhost);
        let response = self.call(reqwest::Method::PUT, &format!("/vhosts/{v}"), None).await;
        assert!(response.status().is_success(), "create vhost {vhost}: {}", response.status());
        let permissions = serde_json::json!({ "configure": ".*", "write": ".*", "read": ".*" });
        let response =
            self.call(reqwest::Method::PUT, &format!("/permissions/{v}/guest"), Some(permissions)).await;
        assert!(response.status().is_success(), "set permissions on {vhost}: {}", response.status());
    }

    /// Deletes a vhost: the broker closes every connection to it.
    pub async fn delete_vhost(&self, vhost: &str) {
        let _ = self.call(reqwest::Method::DELETE, &format!("/vhosts/{}", encode(vhost)), None).await;
    }

    /// The bindings in a vhost, as the management API lists them.
    pub async fn bindings(&self, vhost: &str) -> Vec<Value> {
        let response = self.call(reqwest::Method::GET, &format!("/bindings/{}", encode(vhost)), None).await;
        response.json().await.expect("bindings are JSON")
    }

    /// The client connections to a vhost (names and properties).
    pub async fn connections(&self, vhost: &str) -> Vec<Value> {
        let response =
            self.call(reqwest::Method::GET, &format!("/vhosts/{}/connections", encode(vhost)), None).await;
        response.json().await.expect("connections are JSON")
    }

    /// Closes a connection from the broker's side, as `rabbitmqctl close_connection` does.
    pub async fn close_connection(&self, name: &str) {
        let path = format!("/connections/{}", urlencode(name));
        let _ = self.call(reqwest::Method::DELETE, &path, None).await;
    }

    /// The names of a vhost's exchanges.
    pub async fn exchanges(&self, vhost: &str) -> Vec<String> {
        let response = self.call(reqwest::Method::GET, &format!("/exchanges/{}", encode(vhost)), None).await;
        let list: Vec<Value> = response.json().await.expect("exchanges are JSON");
        list.iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect()
    }

    /// Up to `count` messages of a queue, left in the queue (the management UI's "get
    /// messages"), each with its `properties` (headers included) and its `payload` as text.
    pub async fn peek(&self, vhost: &str, queue: &str, count: usize) -> Vec<Value> {
        let body = serde_json::json!({
            "count": count, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 100_000
        });
        let path = format!("/queues/{}/{}/get", encode(vhost), encode(queue));
        let response = self.call(reqwest::Method::POST, &path, Some(body)).await;
        assert!(response.status().is_success(), "get messages of {queue}: {}", response.status());
        response.json().await.expect("messages are JSON")
    }

    /// The queues of a vhost.
    pub async fn queues(&self, vhost: &str) -> Vec<Value> {
        let response = self.call(reqwest::Method::GET, &format!("/queues/{}", encode(vhost)), None).await;
        response.json().await.expect("queues are JSON")
    }
}

fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
