//! How the bus's pool opens a connection: plain AMQP, or AMQP over TLS (`RABBITMQ_TLS`) with
//! the trust of [`crate::tls`].
//!
//! The pool is deadpool's, with this `Manager`: deadpool-lapin's connects with lapin's
//! defaults, which take no CA. Over TLS the manager makes lapin's transport itself (a TCP
//! stream upgraded by a rustls connector of our configuration) and hands it to
//! `Connection::connector`; lapin's own `amqps` path takes its roots from its cargo features
//! (none at all with ours) and cannot be given a CA file.
//! A connection the TLS layer refused fails as [`ConnectError::Trust`], in words, which the
//! supervisor reports as an ERROR (see [`Bus`](super::Bus)).

use std::path::PathBuf;

use lapin::{
    Connection, ConnectionProperties,
    tcp::{AsyncTcpStream, RustlsConnector},
    uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo},
};

use crate::{config::Config, tls};

/// lapin's runtime on tokio: the current tokio runtime, as deadpool-lapin used.
type Runtime = async_rs::TokioRuntime;

/// The bus's connection pool.
pub(crate) type Pool = deadpool::managed::Pool<Manager>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TLS refused: the broker's certificate is not trusted, the CA file cannot be read any
    /// more, or the port does not speak TLS. Retrying alone will not help.
    #[error("{0}")]
    Trust(String),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// Opens the pool's connections; see the module documentation. No `Debug`: the URI holds the
/// password.
pub(crate) struct Manager {
    uri: AMQPUri,
    transport: Transport,
    /// The name the broker shows for each connection (`<binary> pid <pid>`).
    name: String,
}

/// How the bytes travel (`RABBITMQ_TLS`).
enum Transport {
    Plain,
    /// TLS, trusting the CAs of this file (read again per connection), or the public roots.
    Tls {
        ca_file: Option<PathBuf>,
    },
}

impl Manager {
    pub(crate) fn new(config: &Config, name: String) -> Self {
        let transport = match config.rabbitmq_tls {
            false => Transport::Plain,
            true => Transport::Tls { ca_file: config.rabbitmq_ca_file.clone() },
        };
        Self { uri: uri(config), transport, name }
    }
}

/// The broker's address and credentials as lapin takes them: what [`Config::amqp_uri`] says,
/// built rather than parsed, so that nothing is left to fail at each connection.
fn uri(config: &Config) -> AMQPUri {
    AMQPUri {
        scheme: if config.rabbitmq_tls { AMQPScheme::AMQPS } else { AMQPScheme::AMQP },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: config.rabbitmq_username.clone(),
                password: config.rabbitmq_password.expose().to_owned(),
            },
            host: config.rabbitmq_host.clone(),
            port: config.rabbitmq_port,
        },
        vhost: config.rabbitmq_vhost.clone(),
        query: Default::default(),
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = Connection;
    type Error = ConnectError;

    async fn create(&self) -> Result<Connection, ConnectError> {
        let uri = self.uri.clone();
        let properties = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let runtime = Runtime::tokio_current();
        let Transport::Tls { ca_file } = &self.transport else {
            return Ok(Connection::connect_uri_with_runtime(uri, properties, runtime).await?);
        };
        let config = tls::client_config(ca_file.as_deref())
            .map_err(|reason| ConnectError::Trust(format!("RABBITMQ_CA_FILE: {reason}")))?;
        let connector = RustlsConnector::from(config);
        // As lapin connects, but with our connector; the certificate must name the host of the
        // URI, RABBITMQ_HOST.
        let transport = async move |uri: AMQPUri, runtime: Runtime| {
            let host = uri.authority.host;
            let addresses = runtime.to_socket_addrs((host.clone(), uri.authority.port));
            let tcp = AsyncTcpStream::connect(&runtime, addresses).await?;
            Ok(tcp.into_rustls(&connector, &host).await?)
        };
        let connected = Connection::connector(uri, runtime, transport, properties).await;
        connected.map_err(|error| match tls::refusal(&error, ca_file.as_deref()) {
            Some(words) => ConnectError::Trust(words),
            None => ConnectError::Amqp(error),
        })
    }

    async fn recycle(
        &self,
        connection: &mut Connection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<ConnectError> {
        if connection.status().connected() {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message("the connection is no longer open"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URI the pool connects to is the one `Config::amqp_uri` shows (and backends in
    /// other languages are told to build).
    #[test]
    fn the_uri_is_the_one_the_configuration_shows() {
        for tls in [false, true] {
            let config = Config {
                rabbitmq_host: "10.0.0.5".into(),
                rabbitmq_port: 5671,
                rabbitmq_password: crate::config::Secret::new("p@ss:word"),
                rabbitmq_vhost: "test/1".into(),
                rabbitmq_tls: tls,
                ..Config::default()
            };
            let shown: AMQPUri = config.amqp_uri().expose().parse().expect("a URI");
            assert!(uri(&config) == shown, "tls {tls}");
        }
    }
}
