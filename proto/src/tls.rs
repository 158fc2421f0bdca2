//! TLS on the client side: how `wf` clients and workers reach a coordinator that serves
//! `https://`.
//!
//! The address's scheme decides: `https://` is TLS (rustls), `http://` is plaintext. The
//! server is verified against the CA in `ca` if given, else against the system's roots.
//! A client certificate and key (`cert`, `key`) are sent when the coordinator asks for
//! one (mTLS: workers need one when the coordinator verifies client certificates).
//! TLS options on an `http://` address are an error rather than silently unused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A client's TLS options, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA that signed the coordinator's certificate (else the system's roots).
    pub ca: Option<PathBuf>,
    /// PEM files of this client's certificate and its key (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify the coordinator's certificate against, when it is not the
    /// address's host (e.g. connecting by IP to a certificate for a DNS name).
    pub domain: Option<String>,
}

impl ClientTls {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.domain.is_some()
    }
}

/// The bytes of a PEM file; the error names `what` (the option) and the path.
pub fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("the {what} {} is not a PEM file", path.display()));
    }
    Ok(bytes)
}

/// How often a client pings the coordinator over HTTP/2 ([`endpoint`]).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint for the coordinator at `url` with `tls`; the error names the option.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|_| format!("coordinator address {url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(5))
        // A link that went silent (a partition, a half-open connection) is found by
        // HTTP/2 pings within 20 s, and the channel connects again; without them a call
        // on it waited for TCP to give up, minutes later.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let secure = url.starts_with("https://");
    if !secure {
        if tls.any() {
            return Err(format!(
                "TLS options are given but the coordinator address {url} is plaintext: write it as https://"
            ));
        }
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(path) => config.ca_certificate(Certificate::from_pem(read_pem(path, "CA certificate (--tls-ca)")?)),
        None => config.with_native_roots(),
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read_pem(cert, "client certificate (--tls-client-cert)")?,
                read_pem(key, "client key (--tls-client-key)")?,
            ));
        }
        (None, None) => {}
        _ => return Err("--tls-client-cert and --tls-client-key go together: give both or neither".into()),
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    endpoint.tls_config(config).map_err(|e| format!("TLS setup for {url} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_on_a_plaintext_address_are_refused() {
        let tls = ClientTls { ca: Some("ca.pem".into()), ..ClientTls::default() };
        let error = endpoint("http://127.0.0.1:1", &tls).expect_err("refused");
        assert!(error.contains("https://"), "{error}");
        assert!(endpoint("http://127.0.0.1:1", &ClientTls::default()).is_ok());
    }

    #[test]
    fn a_half_given_client_identity_or_a_non_pem_ca_is_refused() {
        let dir = std::env::temp_dir().join(format!("wf-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not a certificate").expect("write");
        let error = endpoint("https://h:1", &ClientTls { ca: Some(junk.clone()), ..ClientTls::default() })
            .expect_err("refused");
        assert!(error.contains("not a PEM file") && error.contains("--tls-ca"), "{error}");
        let half = ClientTls { cert: Some(junk), ..ClientTls::default() };
        let error = endpoint("https://h:1", &half).expect_err("refused");
        assert!(error.contains("go together"), "{error}");
        let error = endpoint("https://h:1", &ClientTls { ca: Some(dir.join("none")), ..ClientTls::default() })
            .expect_err("refused");
        assert!(error.contains("cannot read"), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }
}
