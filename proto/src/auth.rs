//! Bearer tokens on the wire: what clients send, and how a token is stored.
//!
//! A client sends `authorization: Bearer <token>` on every call ([`BearerToken`], a
//! tonic interceptor). The coordinator never stores a token, only its [`token_hash`]:
//! tokens are 256 random bits, so an unsalted BLAKE3 hash cannot be reversed.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// Adds the caller's token, if it has one, to every request.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// A client that sends `token` (`None`: sends nothing, for a coordinator without
    /// authentication). A token that is not printable ASCII is an error.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(Self(None)) };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token is not printable ASCII".into());
        }
        let value = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| "the token is not printable ASCII".to_string())?;
        Ok(Self(Some(value)))
    }

    /// The token from `WF_TOKEN`, else from the file `token_file` (first line), else none.
    pub fn from_env_or_file(token_file: Option<&std::path::Path>) -> Result<Self, String> {
        if let Ok(token) = std::env::var("WF_TOKEN")
            && !token.trim().is_empty()
        {
            return Self::new(Some(&token));
        }
        match token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
                Self::new(text.lines().next())
            }
            None => Ok(Self(None)),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// How a token is stored: `blake3:` and the hex of its BLAKE3 hash.
pub fn token_hash(token: &str) -> String {
    format!("blake3:{}", blake3::hash(token.trim().as_bytes()).to_hex())
}

/// The token a request carries, from `authorization: Bearer <token>`: `Err` with the
/// reason when the header is there but malformed.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<Option<&str>, &'static str> {
    let Some(value) = metadata.get(AUTHORIZATION) else { return Ok(None) };
    let text = value.to_str().map_err(|_| "the authorization header is not ASCII")?;
    let token = text.strip_prefix("Bearer ").ok_or("the authorization header is not \"Bearer <token>\"")?;
    if token.trim().is_empty() {
        return Err("the bearer token is empty");
    }
    Ok(Some(token.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_travels_as_a_bearer_header_and_is_stored_as_a_hash() {
        let mut client = BearerToken::new(Some("wf_abc")).expect("token");
        let request = client.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(bearer(request.metadata()), Ok(Some("wf_abc")));
        assert_eq!(token_hash("wf_abc"), token_hash(" wf_abc\n"));
        assert_ne!(token_hash("wf_abc"), token_hash("wf_abd"));
        assert!(token_hash("wf_abc").starts_with("blake3:") && token_hash("x").len() == 7 + 64);
        let mut anonymous = BearerToken::new(None).expect("none");
        assert_eq!(bearer(anonymous.call(tonic::Request::new(())).expect("intercepted").metadata()), Ok(None));
        let mut malformed = tonic::Request::new(());
        malformed.metadata_mut().insert(AUTHORIZATION, "Basic x".parse().expect("ascii"));
        assert!(bearer(malformed.metadata()).is_err());
        assert!(BearerToken::new(Some("tök")).is_err());
    }
}
