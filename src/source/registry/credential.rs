//! Credentials for a registry, as the credentials files and helpers give
//! them; their `Debug` keeps the secrets out of logs and errors.

/// Credentials for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password, for Basic authentication or a token request.
    Basic { username: String, password: String },
    /// An OAuth2 refresh token, exchanged at the token server for an access
    /// token (`grant_type=refresh_token`).
    IdentityToken { username: String, token: String },
}

/// Secrets stay out of logs and error messages.
impl std::fmt::Debug for Credential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => formatter
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken { username, .. } => formatter
                .debug_struct("IdentityToken")
                .field("username", username)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}
