//! TLS to the broker (`RABBITMQ_TLS`): which certificate authorities the bus trusts, and what a
//! refused certificate means, in words an operator can act on.
//!
//! The broker's certificate is checked against the CAs of `RABBITMQ_CA_FILE` when it is set,
//! and against those only; unset, against the public roots bundled in the binary (Mozilla's,
//! from `webpki-roots`, the set sqlx trusts for PostgreSQL). Only, not as well: naming a CA says
//! where the broker's certificate comes from, and trusting the hundred-odd public CAs besides
//! would let any of them vouch for the broker's name while adding nothing for a broker whose
//! certificate a private CA signed. That is also what `cacertfile` means to RabbitMQ's own
//! clients and `sslrootcert` to libpq. (sqlx, unlike libpq, adds `sslrootcert` to the public
//! roots: deploy/README.md says so where it describes TLS to PostgreSQL.)
//!
//! The file is read when the configuration is loaded, so one that cannot be read or holds no
//! certificate stops the process at start ([`Config::load`](crate::Config::load)), and again for
//! every new connection ([`client_config`]), so a CA replaced in place (a renewed Secret or
//! ConfigMap) is trusted from the next reconnection on, without a restart.

use std::{error::Error as StdError, io, path::Path, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Reads a PEM file of CA certificates into a root store. The error is the reason in words,
/// after the variable's name in the one line a bad configuration prints.
pub fn read_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|error| format!("cannot read {shown}: {error}"))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| format!("{shown} is not valid PEM: {error}"))?;
        roots
            .add(certificate)
            .map_err(|error| format!("{shown} holds a certificate that cannot be a CA: {error}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(roots)
}

/// The rustls configuration of one new connection: trusting the CAs of `ca_file` only, or the
/// public roots when there is none. Built per connection so that a replaced file is read again.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_file {
        Some(path) => read_ca_file(path)?,
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    // The provider named, not taken from the process default: which one that is depends on the
    // features other crates turn on in rustls.
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What the TLS layer refused, found anywhere in `error`'s cause chain, in words: why the
/// broker's certificate is not trusted, or that the broker does not speak TLS on that port.
/// `None` when TLS had nothing to do with the failure (a refused connection, a wrong password).
pub fn refusal(error: &(dyn StdError + 'static), ca_file: Option<&Path>) -> Option<String> {
    let tls = tls_error(error)?;
    let trusted = match ca_file {
        Some(path) => format!("a CA of RABBITMQ_CA_FILE ({})", path.display()),
        None => "a public CA (set RABBITMQ_CA_FILE to the CA that signed it)".to_owned(),
    };
    let words = match tls {
        rustls::Error::InvalidCertificate(problem) => match problem {
            CertificateError::UnknownIssuer => {
                format!("the broker's certificate is not signed by {trusted}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the broker's certificate does not name the host connected to (RABBITMQ_HOST must be \
                 a name the certificate carries): {problem}"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the broker's certificate has expired: {problem}")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the broker's certificate is not valid yet (check the clocks): {problem}")
            }
            CertificateError::BadSignature => {
                format!("the broker's certificate has a signature that does not verify against {trusted}")
            }
            other => format!("the broker's certificate is refused: {other}"),
        },
        // What a plain AMQP port answers to a TLS hello is no TLS record at all.
        rustls::Error::InvalidMessage(_) => {
            "the broker does not speak TLS on RABBITMQ_PORT (its TLS port is usually 5671)".to_owned()
        }
        other => format!("the TLS handshake with the broker failed: {other}"),
    };
    Some(words)
}

/// The rustls error in `error`'s cause chain. An `io::Error` that wraps one hides it from
/// `source()` (which skips to the wrapped error's own source), hence `get_ref`.
fn tls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match error.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => error.source(),
        };
    }
    None
}
