//! Registry authentication challenges and bearer tokens.
//!
//! A registry that wants credentials answers `401 Unauthorized` with a
//! `WWW-Authenticate` header. Its syntax is RFC 7235 §4.1 and §2.1:
//!
//! ```text
//! WWW-Authenticate = 1#challenge
//! challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param       = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! with `quoted-string` from RFC 7230 §3.2.6 (backslash escapes). Registries
//! send `Basic realm="Registry Realm"` or, for token authentication (the
//! Docker Registry token specification), `Bearer realm="https://auth.docker.io/token",
//! service="registry.docker.io",scope="repository:library/debian:pull"`.
//! One header may hold several challenges separated by commas, which are also
//! the parameter separator: after a comma, `name=` continues the current
//! challenge and anything else starts the next one.
//!
//! [`parse_challenges`] reads the header leniently, the way
//! docker/distribution and containers-image do: scheme and parameter names
//! are case-insensitive, a challenge whose syntax breaks keeps the parameters
//! read so far, and garbage is skipped up to the next comma. The header comes
//! from the network, so only its first [`MAX_HEADER_BYTES`] are read and
//! nothing in it can make the parser panic.
//!
//! [`token_url`] builds the token request of the token specification
//! (`realm?service=…&scope=…`), and [`parse_token_response`] reads the
//! answer, taking `token` or, failing that, OAuth2's `access_token` (the
//! specification allows both; containers-image prefers `token`).
//! [`form_urlencoded`] builds the body of the OAuth2 form POST (the
//! refresh-token grant an identity token is exchanged by), whose answer
//! [`parse_oauth2_token_response`] reads, preferring `access_token`.

/// The longest header value read; anything after it is ignored.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The largest token response body accepted.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic authentication (RFC 7617).
    Basic { realm: Option<String> },
    /// Token authentication: get a token from `realm`, then send it as
    /// `Authorization: Bearer <token>` (RFC 6750, Docker token specification).
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Any other scheme, by the name the server gave it.
    Other(String),
}

/// Parses every challenge of a `WWW-Authenticate` header value, in order.
///
/// Never panics. A `Bearer` challenge without a non-empty `realm` cannot be
/// used and is left out; unknown schemes come back as [`Challenge::Other`];
/// empty `realm`, `service` and `scope` values count as absent. Text that is
/// not a challenge is skipped, so garbage gives an empty list.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    parse_raw_challenges(truncate_to_char_boundary(header, MAX_HEADER_BYTES))
        .into_iter()
        .filter_map(RawChallenge::into_challenge)
        .collect()
}

/// Builds the URL of a token request: `realm` with `service` and one `scope`
/// parameter per scope appended as percent-encoded query parameters.
///
/// A realm that already has a query keeps it (the parameters follow with
/// `&`); a fragment is dropped, since it is never sent to a server. Empty
/// services and scopes are left out.
pub fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let without_fragment = realm.split('#').next().unwrap_or(realm);
    let mut url = String::with_capacity(without_fragment.len() + 64);
    url.push_str(without_fragment);

    let mut separator = match without_fragment.find('?') {
        None => "?",
        Some(_) if url.ends_with('?') || url.ends_with('&') => "",
        Some(_) => "&",
    };
    let parameters = service
        .map(|service| ("service", service))
        .into_iter()
        .chain(scopes.iter().map(|scope| ("scope", scope.as_str())))
        .filter(|(_, value)| !value.is_empty());
    for (name, value) in parameters {
        url.push_str(separator);
        url.push_str(name);
        url.push('=');
        percent_encode_into(value, &mut url);
        separator = "&";
    }
    url
}

/// An `application/x-www-form-urlencoded` body of `pairs`, in order, names
/// and values percent-encoded (a space as `%20`, which form decoders take).
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, value) in pairs {
        if !body.is_empty() {
            body.push('&');
        }
        percent_encode_into(name, &mut body);
        body.push('=');
        percent_encode_into(value, &mut body);
    }
    body
}

/// The useful part of a token server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token, safe to put in an HTTP header.
    pub token: String,
    /// Seconds the token stays valid, when the server said so.
    pub expires_in: Option<u64>,
}

/// Why a token response cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token response is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },

    #[error("token response is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),

    #[error("token response is not a JSON object")]
    NotAnObject,

    #[error("token response has neither a \"token\" nor an \"access_token\"")]
    MissingToken,

    #[error("token response holds a token with characters that cannot be sent in an HTTP header")]
    InvalidToken,
}

/// Reads a token server's JSON answer (Docker token specification: `token`
/// or `access_token`, optional `expires_in` in seconds).
///
/// `token` is preferred when both are present and non-empty. An empty token
/// is refused, and so is one with anything but visible ASCII, which could
/// otherwise smuggle header lines into the next request. An `expires_in`
/// that is not a non-negative integer is ignored rather than refused.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, TokenError> {
    parse_token_fields(body, ["token", "access_token"])
}

/// Reads the answer to an OAuth2 token POST: as [`parse_token_response`],
/// but `access_token`, OAuth2's own field, is preferred to `token`.
pub fn parse_oauth2_token_response(body: &[u8]) -> Result<TokenResponse, TokenError> {
    parse_token_fields(body, ["access_token", "token"])
}

fn parse_token_fields(body: &[u8], fields: [&str; 2]) -> Result<TokenResponse, TokenError> {
    if body.len() > MAX_TOKEN_RESPONSE_BYTES {
        return Err(TokenError::TooLarge {
            size: body.len(),
            limit: MAX_TOKEN_RESPONSE_BYTES,
        });
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(TokenError::InvalidJson)?;
    let object = value.as_object().ok_or(TokenError::NotAnObject)?;

    let non_empty_string = |name: &str| {
        object
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|text| !text.is_empty())
    };
    let token = non_empty_string(fields[0])
        .or_else(|| non_empty_string(fields[1]))
        .ok_or(TokenError::MissingToken)?;
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(TokenError::InvalidToken);
    }
    let expires_in = object.get("expires_in").and_then(serde_json::Value::as_u64);
    Ok(TokenResponse {
        token: token.to_string(),
        expires_in,
    })
}

/// A challenge as written: its scheme and its parameters (names lowercased,
/// first occurrence kept), before the schemes we know are interpreted.
#[derive(Debug, PartialEq, Eq)]
struct RawChallenge<'a> {
    scheme: &'a str,
    parameters: Vec<(String, String)>,
}

impl RawChallenge<'_> {
    fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    fn add_parameter(&mut self, name: &str, value: String) {
        let name = name.to_ascii_lowercase();
        if !self.parameters.iter().any(|(key, _)| *key == name) {
            self.parameters.push((name, value));
        }
    }

    fn into_challenge(self) -> Option<Challenge> {
        let owned = |value: Option<&str>| value.map(str::to_string);
        if self.scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic {
                realm: owned(self.parameter("realm")),
            })
        } else if self.scheme.eq_ignore_ascii_case("bearer") {
            let Some(realm) = self.parameter("realm") else {
                tracing::debug!("ignoring a Bearer challenge without a realm");
                return None;
            };
            Some(Challenge::Bearer {
                realm: realm.to_string(),
                service: owned(self.parameter("service")),
                scope: owned(self.parameter("scope")),
            })
        } else {
            Some(Challenge::Other(self.scheme.to_string()))
        }
    }
}

/// A syntax error inside one challenge; the parser recovers at the next comma.
#[derive(Debug)]
struct SyntaxError;

fn parse_raw_challenges(header: &str) -> Vec<RawChallenge<'_>> {
    let mut cursor = Cursor::new(header);
    let mut challenges = Vec::new();
    loop {
        cursor.skip_list_separators();
        if cursor.at_end() {
            break;
        }
        let Some(scheme) = cursor.token() else {
            cursor.skip_to_next_comma();
            continue;
        };
        // A scheme is followed by a space, a comma or the end; `name=` or a
        // quote here means we are in the debris of a broken challenge.
        match cursor.peek() {
            None | Some(b',') => {
                challenges.push(RawChallenge {
                    scheme,
                    parameters: Vec::new(),
                });
                continue;
            }
            Some(b' ' | b'\t') => cursor.skip_whitespace(),
            Some(_) => {
                cursor.skip_to_next_comma();
                continue;
            }
        }
        let mut challenge = RawChallenge {
            scheme,
            parameters: Vec::new(),
        };
        if cursor.skip_token68() {
            challenges.push(challenge);
            continue;
        }
        let outcome = parse_parameters(&mut cursor, &mut challenge);
        challenges.push(challenge);
        if let Err(SyntaxError) = outcome {
            tracing::debug!("malformed challenge in WWW-Authenticate {header:?}");
            cursor.skip_to_next_comma();
        }
    }
    challenges
}

/// Reads `name=value` pairs up to the end of the challenge, leaving the
/// cursor before the comma that precedes the next challenge, if any.
fn parse_parameters(
    cursor: &mut Cursor<'_>,
    challenge: &mut RawChallenge<'_>,
) -> Result<(), SyntaxError> {
    loop {
        let name = cursor.token().ok_or(SyntaxError)?;
        cursor.skip_whitespace();
        if !cursor.eat(b'=') {
            return Err(SyntaxError);
        }
        cursor.skip_whitespace();
        let value = if cursor.peek() == Some(b'"') {
            cursor.quoted_string()?
        } else {
            cursor.token().ok_or(SyntaxError)?.to_string()
        };
        challenge.add_parameter(name, value);
        cursor.skip_whitespace();
        match cursor.peek() {
            None => return Ok(()),
            Some(b',') if cursor.parameter_follows_comma() => cursor.skip_list_separators(),
            Some(b',') => return Ok(()),
            Some(_) => return Err(SyntaxError),
        }
    }
}

/// A position in the header, read byte by byte. Every delimiter the grammar
/// knows is ASCII, so slicing at them keeps UTF-8 intact.
struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, position: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    fn peek_at(&self, position: usize) -> Option<u8> {
        self.text.as_bytes().get(position).copied()
    }

    fn at_end(&self) -> bool {
        self.position >= self.text.len()
    }

    fn eat(&mut self, expected: u8) -> bool {
        if self.peek() == Some(expected) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn skip_while(&mut self, mut keep_going: impl FnMut(u8) -> bool) {
        while self.peek().is_some_and(&mut keep_going) {
            self.position += 1;
        }
    }

    /// Skips optional whitespace (OWS / BWS: spaces and tabs).
    fn skip_whitespace(&mut self) {
        self.skip_while(is_whitespace);
    }

    /// Skips whitespace and the commas between list elements (RFC 7230 §7
    /// allows empty elements).
    fn skip_list_separators(&mut self) {
        self.skip_while(|byte| byte == b',' || is_whitespace(byte));
    }

    /// Reads a `token` (one or more `tchar`), or nothing.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.position;
        self.skip_while(is_token_char);
        // Token characters are ASCII, so both ends are char boundaries.
        self.text
            .get(start..self.position)
            .filter(|token| !token.is_empty())
    }

    /// Reads a `quoted-string` starting at the opening quote, undoing
    /// backslash escapes.
    fn quoted_string(&mut self) -> Result<String, SyntaxError> {
        if !self.eat(b'"') {
            return Err(SyntaxError);
        }
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(SyntaxError),
                Some(b'"') => {
                    self.position += 1;
                    break;
                }
                Some(b'\\') => {
                    self.position += 1;
                    match self.peek() {
                        Some(byte) if byte == b'\t' || !byte.is_ascii_control() => {
                            value.push(byte);
                            self.position += 1;
                        }
                        _ => return Err(SyntaxError),
                    }
                }
                Some(byte) if byte == b'\t' || !byte.is_ascii_control() => {
                    value.push(byte);
                    self.position += 1;
                }
                Some(_) => return Err(SyntaxError),
            }
        }
        // Escapes only drop ASCII backslashes, so the bytes stay UTF-8; stay
        // defensive anyway.
        String::from_utf8(value).map_err(|_| SyntaxError)
    }

    /// Consumes a `token68` (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
    /// "+" / "/" ) *"="`) if one stands alone here, i.e. is followed only by
    /// whitespace and then a comma or the end. Returns whether it did.
    fn skip_token68(&mut self) -> bool {
        let bytes = self.text.as_bytes();
        let mut end = self.position;
        while end < bytes.len() && is_token68_char(bytes[end]) {
            end += 1;
        }
        if end == self.position {
            return false;
        }
        while end < bytes.len() && bytes[end] == b'=' {
            end += 1;
        }
        let after = end;
        while end < bytes.len() && is_whitespace(bytes[end]) {
            end += 1;
        }
        if end < bytes.len() && bytes[end] != b',' {
            return false;
        }
        self.position = after;
        true
    }

    /// With the cursor on a comma: whether a `name=` parameter follows the
    /// commas (so the current challenge goes on) rather than a new scheme.
    fn parameter_follows_comma(&self) -> bool {
        let mut position = self.position;
        while self
            .peek_at(position)
            .is_some_and(|byte| byte == b',' || is_whitespace(byte))
        {
            position += 1;
        }
        let name_start = position;
        while self.peek_at(position).is_some_and(is_token_char) {
            position += 1;
        }
        if position == name_start {
            return false;
        }
        while self.peek_at(position).is_some_and(is_whitespace) {
            position += 1;
        }
        self.peek_at(position) == Some(b'=')
    }

    /// Skips to the next comma that is not inside a quoted string.
    fn skip_to_next_comma(&mut self) {
        while let Some(byte) = self.peek() {
            match byte {
                b',' => return,
                b'"' => {
                    if self.quoted_string().is_err() {
                        self.position = self.text.len();
                    }
                }
                _ => self.position += 1,
            }
        }
    }
}

fn is_whitespace(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// `tchar` of RFC 7230 §3.2.6.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_token68_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte)
}

fn truncate_to_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends `value` percent-encoded for a URL query: everything but RFC 3986
/// unreserved characters becomes `%XX`.
fn percent_encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scope: scope.map(str::to_string),
        }
    }

    fn basic(realm: Option<&str>) -> Challenge {
        Challenge::Basic {
            realm: realm.map(str::to_string),
        }
    }

    #[test]
    fn docker_hub_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_challenges(header),
            vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/debian:pull")
            )]
        );
    }

    #[test]
    fn basic_challenge_with_and_without_realm() {
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![basic(Some("Registry Realm"))]
        );
        assert_eq!(parse_challenges("Basic"), vec![basic(None)]);
        assert_eq!(parse_challenges("Basic realm=\"\""), vec![basic(None)]);
    }

    #[test]
    fn scheme_and_parameter_names_are_case_insensitive() {
        let header = r#"bEaReR REALM="https://r/t", Service="s",SCOPE="x""#;
        assert_eq!(
            parse_challenges(header),
            vec![bearer("https://r/t", Some("s"), Some("x"))]
        );
        assert_eq!(parse_challenges("BASIC Realm=r"), vec![basic(Some("r"))]);
    }

    #[test]
    fn escapes_and_commas_inside_quotes() {
        let header = r#"Bearer realm="https://a/t?x=1,2",scope="a\"b\\c,d",service="\s""#;
        assert_eq!(
            parse_challenges(header),
            vec![bearer("https://a/t?x=1,2", Some("s"), Some(r#"a"b\c,d"#))]
        );
    }

    #[test]
    fn unquoted_token_values_and_spaces_around_separators() {
        let header = "Bearer   realm = \"https://r/t\" ,  service\t=\tregistry.example ,scope=repo";
        assert_eq!(
            parse_challenges(header),
            vec![bearer(
                "https://r/t",
                Some("registry.example"),
                Some("repo")
            )]
        );
    }

    #[test]
    fn several_challenges_in_one_header() {
        let header =
            r#"Basic realm="x", Bearer realm="y",service="z", Negotiate, Bearer realm="w""#;
        assert_eq!(
            parse_challenges(header),
            vec![
                basic(Some("x")),
                bearer("y", Some("z"), None),
                Challenge::Other("Negotiate".to_string()),
                bearer("w", None, None),
            ]
        );
    }

    #[test]
    fn token68_challenges_are_other() {
        assert_eq!(
            parse_challenges("Negotiate YIIB/abc+==, Basic realm=r"),
            vec![Challenge::Other("Negotiate".to_string()), basic(Some("r"))]
        );
        assert_eq!(
            parse_challenges("NTLM abc"),
            vec![Challenge::Other("NTLM".to_string())]
        );
    }

    #[test]
    fn bearer_without_realm_is_dropped() {
        assert_eq!(parse_challenges(r#"Bearer service="s""#), vec![]);
        assert_eq!(parse_challenges(r#"Bearer realm="""#), vec![]);
        assert_eq!(parse_challenges("Bearer"), vec![]);
        assert_eq!(
            parse_challenges(r#"Bearer service="s", Basic realm="b""#),
            vec![basic(Some("b"))]
        );
    }

    #[test]
    fn first_of_duplicate_parameters_wins() {
        assert_eq!(
            parse_challenges(r#"Bearer realm="a", realm="b""#),
            vec![bearer("a", None, None)]
        );
    }

    #[test]
    fn empty_list_elements_are_skipped() {
        assert_eq!(
            parse_challenges(r#" , ,Basic realm="x",, ,Bearer realm="y",,scope="s",  "#),
            vec![basic(Some("x")), bearer("y", None, Some("s"))]
        );
    }

    #[test]
    fn broken_challenge_keeps_what_was_read_and_recovers() {
        // A missing comma between parameters.
        let header = r#"Bearer realm="https://r/t" junk, service="s", Basic realm="b""#;
        assert_eq!(
            parse_challenges(header),
            vec![bearer("https://r/t", None, None), basic(Some("b"))]
        );
        // An unterminated quote eats the rest of the header.
        assert_eq!(
            parse_challenges(r#"Basic realm="b", Bearer realm="unterminated, Basic"#),
            vec![basic(Some("b"))]
        );
    }

    #[test]
    fn garbage_gives_nothing() {
        for header in [
            "",
            "   ",
            ",,,",
            "=",
            "\"quoted\"",
            "=realm=\"x\"",
            "realm=\"x\"",
            "@@@ ###",
            "\u{1F600}",
            "\\",
            "\"",
        ] {
            assert_eq!(parse_challenges(header), vec![], "{header:?}");
        }
    }

    #[test]
    fn control_characters_in_quotes_are_refused() {
        assert_eq!(parse_challenges("Bearer realm=\"a\nb\""), vec![]);
        assert_eq!(
            parse_challenges("Basic realm=\"tab\there\""),
            vec![basic(Some("tab\there"))]
        );
    }

    #[test]
    fn non_ascii_survives_in_quoted_values() {
        assert_eq!(
            parse_challenges("Basic realm=\"Région \\é\""),
            vec![basic(Some("Région é"))]
        );
    }

    #[test]
    fn long_headers_are_cut_and_never_panic() {
        let long_realm = "é".repeat(MAX_HEADER_BYTES);
        let header = format!("Basic realm=\"x\", Bearer realm=\"{long_realm}\"");
        assert_eq!(parse_challenges(&header), vec![basic(Some("x"))]);

        let many = "Basic realm=x, ".repeat(10_000);
        let parsed = parse_challenges(&many);
        assert!(!parsed.is_empty());
        assert!(parsed.len() <= MAX_HEADER_BYTES / "Basic realm=x, ".len() + 1);
    }

    #[test]
    fn every_prefix_of_a_header_parses_without_panicking() {
        let header = r#"Basic realm="a\"b, c", Bearer realm = "https://r/t?q=1",service=svc,scope="s p", Negotiate abc=="#;
        for end in 0..=header.len() {
            if header.is_char_boundary(end) {
                let _ = parse_challenges(&header[..end]);
            }
        }
        for byte in 0u8..=127 {
            let text = format!("Bearer realm=\"r\"{}", char::from(byte));
            let _ = parse_challenges(&text);
        }
    }

    #[test]
    fn token_url_encodes_service_and_scopes() {
        let scopes = vec![
            "repository:library/debian:pull".to_string(),
            "repository:a b/c:pull,push".to_string(),
        ];
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                &scopes
            ),
            "https://auth.docker.io/token?service=registry.docker.io\
             &scope=repository%3Alibrary%2Fdebian%3Apull\
             &scope=repository%3Aa%20b%2Fc%3Apull%2Cpush"
        );
    }

    #[test]
    fn token_url_keeps_an_existing_query() {
        let scopes = vec!["s".to_string()];
        assert_eq!(
            token_url("https://r/t?a=1", Some("svc"), &scopes),
            "https://r/t?a=1&service=svc&scope=s"
        );
        assert_eq!(
            token_url("https://r/t?", None, &scopes),
            "https://r/t?scope=s"
        );
        assert_eq!(
            token_url("https://r/t?a=1&", None, &scopes),
            "https://r/t?a=1&scope=s"
        );
        assert_eq!(
            token_url("https://r/t#frag", None, &scopes),
            "https://r/t?scope=s"
        );
    }

    #[test]
    fn token_url_without_parameters_is_the_realm() {
        assert_eq!(token_url("https://r/t", None, &[]), "https://r/t");
        assert_eq!(
            token_url("https://r/t", Some(""), &[String::new()]),
            "https://r/t"
        );
        assert_eq!(
            token_url("https://r/t", None, &["é~".to_string()]),
            "https://r/t?scope=%C3%A9~"
        );
    }

    #[test]
    fn form_bodies_are_percent_encoded() {
        assert_eq!(
            form_urlencoded(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "a+b/c=d&e f"),
                ("scope", "repository:a/b:pull"),
            ]),
            "grant_type=refresh_token&refresh_token=a%2Bb%2Fc%3Dd%26e%20f\
             &scope=repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(form_urlencoded(&[]), "");
    }

    #[test]
    fn oauth2_token_response_prefers_access_token() {
        let response = parse_oauth2_token_response(
            br#"{"token":"abc","access_token":"def","refresh_token":"r"}"#,
        )
        .expect("valid response");
        assert_eq!(response.token, "def");
        let response = parse_oauth2_token_response(br#"{"token":"abc"}"#).expect("token fallback");
        assert_eq!(response.token, "abc");
        assert!(matches!(
            parse_oauth2_token_response(br#"{"refresh_token":"r"}"#),
            Err(TokenError::MissingToken)
        ));
    }

    #[test]
    fn token_response_prefers_token_over_access_token() {
        let response =
            parse_token_response(br#"{"token":"abc","access_token":"def","expires_in":300}"#)
                .expect("valid response");
        assert_eq!(
            response,
            TokenResponse {
                token: "abc".to_string(),
                expires_in: Some(300)
            }
        );
        let response = parse_token_response(br#"{"token":"","access_token":"def"}"#)
            .expect("access_token fallback");
        assert_eq!(response.token, "def");
        assert_eq!(response.expires_in, None);
        let response =
            parse_token_response(br#"{"access_token":"def","issued_at":"2024-01-01T00:00:00Z"}"#)
                .expect("access_token only");
        assert_eq!(response.token, "def");
    }

    #[test]
    fn token_response_odd_expiry_is_ignored() {
        for expiry in ["-1", "1.5", "\"300\"", "null", "1e400"] {
            let body = format!(r#"{{"token":"t","expires_in":{expiry}}}"#);
            match parse_token_response(body.as_bytes()) {
                Ok(response) => assert_eq!(response.expires_in, None, "{expiry}"),
                Err(TokenError::InvalidJson(_)) if expiry == "1e400" => {}
                Err(error) => panic!("{expiry}: {error}"),
            }
        }
    }

    #[test]
    fn token_response_errors() {
        assert!(matches!(
            parse_token_response(b"{}"),
            Err(TokenError::MissingToken)
        ));
        assert!(matches!(
            parse_token_response(br#"{"token":"","access_token":""}"#),
            Err(TokenError::MissingToken)
        ));
        assert!(matches!(
            parse_token_response(br#"{"token":5}"#),
            Err(TokenError::MissingToken)
        ));
        assert!(matches!(
            parse_token_response(b"[\"token\"]"),
            Err(TokenError::NotAnObject)
        ));
        assert!(matches!(
            parse_token_response(b"not json"),
            Err(TokenError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_token_response(b""),
            Err(TokenError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_token_response(br#"{"token":"a\r\nX-Evil: 1"}"#),
            Err(TokenError::InvalidToken)
        ));
        assert!(matches!(
            parse_token_response(br#"{"token":"has space"}"#),
            Err(TokenError::InvalidToken)
        ));
        let nested = "[".repeat(100_000);
        assert!(matches!(
            parse_token_response(nested.as_bytes()),
            Err(TokenError::InvalidJson(_))
        ));
    }

    #[test]
    fn token_response_size_is_bounded() {
        let padding = " ".repeat(MAX_TOKEN_RESPONSE_BYTES);
        let body = format!(r#"{{"token":"t"}}{padding}"#);
        assert!(matches!(
            parse_token_response(body.as_bytes()),
            Err(TokenError::TooLarge { .. })
        ));
    }
}
