//! URL previews: fetching a page for `/preview_url` without letting a client use the server to
//! reach places it should not (server-side request forgery), and reading its OpenGraph data.
//!
//! Every hop, the first request and each redirect (followed by hand, up to a limit), goes
//! through the address guard (`service::address_guard`, shared with push gateways): it resolves
//! the host itself, checks each address against the configured allow and deny lists and pins
//! the connection to a checked address, so DNS rebinding cannot bypass the check.
//! Bodies are read up to a size limit; the whole preview runs under a time limit set by the
//! caller. HTML is read with `html5gum`, a small WHATWG tokenizer: previews need only the
//! `<title>` and `<meta>` tags, not a DOM.

use std::{net::IpAddr, time::Duration};

use html5gum::{DefaultEmitter, Token, Tokenizer};
use reqwest::{Url, redirect::Policy};
use serde_json::{Map, Value};

use crate::{
    config::UrlPreviewConfig,
    service::address_guard::{AddressGuard, GuardError},
};

/// Longest text kept from one OpenGraph property.
const MAX_PROPERTY_CHARS: usize = 1000;
/// Most OpenGraph properties kept from one page.
const MAX_PROPERTIES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The URL (or a redirect) points where previews may not go.
    #[error("{0}")]
    Forbidden(String),
    /// The URL is not an http(s) URL.
    #[error("{0}")]
    InvalidUrl(String),
    /// The page could not be fetched.
    #[error("{0}")]
    Fetch(String),
}

/// A fetched resource.
#[derive(Debug)]
pub struct Fetched {
    /// The URL after redirects.
    pub url: Url,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Whether the body was cut at the size limit.
    pub truncated: bool,
}

/// Fetches pages and images for previews under the configured limits.
pub struct Fetcher {
    config: UrlPreviewConfig,
    guard: AddressGuard,
    user_agent: String,
}

impl From<GuardError> for PreviewError {
    fn from(error: GuardError) -> Self {
        match error {
            GuardError::Forbidden(why) => PreviewError::Forbidden(why),
            GuardError::InvalidUrl(why) => PreviewError::InvalidUrl(why),
            GuardError::Resolve(why) => PreviewError::Fetch(why),
        }
    }
}

impl Fetcher {
    pub fn new(config: UrlPreviewConfig, server_name: &str) -> Self {
        let guard =
            AddressGuard::new(config.ip_range_denylist.clone(), config.ip_range_allowlist.clone(), "URL previews");
        Self { config, guard, user_agent: format!("Trellis URL preview (Matrix homeserver {server_name})") }
    }

    pub fn config(&self) -> &UrlPreviewConfig {
        &self.config
    }

    /// Whether previews may connect to `ip`: the allow list wins over the deny list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.guard.allows(ip)
    }

    /// Parses a URL a client asked for; only `http` and `https` are fetched.
    pub fn parse_url(url: &str) -> Result<Url, PreviewError> {
        let parsed = Url::parse(url).map_err(|e| PreviewError::InvalidUrl(format!("Invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(PreviewError::InvalidUrl("Only http and https URLs can be previewed".into()));
        }
        Ok(parsed)
    }

    /// Fetches `url`, following redirects, reading at most `max_size` bytes of the body: a longer
    /// body is cut when `allow_truncation`, and refused otherwise.
    pub async fn fetch(&self, mut url: Url, allow_truncation: bool) -> Result<Fetched, PreviewError> {
        for _ in 0..=self.config.max_redirects {
            let url_text = url.to_string();
            let client = self.client_for(&url).await?;
            let mut response = client
                .get(url.clone())
                .header(reqwest::header::ACCEPT, "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
                .send()
                .await
                .map_err(|e| PreviewError::Fetch(format!("Could not fetch {url_text}: {}", without_url(&e))))?;
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| PreviewError::Fetch("Redirect without a Location".into()))?;
                url = url.join(location).map_err(|e| PreviewError::Fetch(format!("Bad redirect: {e}")))?;
                Self::parse_url(url.as_str())?;
                continue;
            }
            if !response.status().is_success() {
                return Err(PreviewError::Fetch(format!("The page answered {}", response.status())));
            }
            let content_type =
                response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let max = self.config.max_size;
            if !allow_truncation && response.content_length().is_some_and(|len| len > max) {
                return Err(PreviewError::Fetch("The resource is too large".into()));
            }
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| PreviewError::Fetch(format!("Could not read {url_text}: {}", without_url(&e))))?
            {
                let room = (max as usize).saturating_sub(body.len());
                if chunk.len() > room {
                    if !allow_truncation {
                        return Err(PreviewError::Fetch("The resource is too large".into()));
                    }
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Fetched { url, content_type, body, truncated });
        }
        Err(PreviewError::Fetch("Too many redirects".into()))
    }

    /// A client for one request to `url`: no proxy, no automatic redirects, and for a host name,
    /// pinned to an address that passed the checks.
    async fn client_for(&self, url: &Url) -> Result<reqwest::Client, PreviewError> {
        let builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .user_agent(&self.user_agent)
            .timeout(Duration::from_secs(self.config.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(self.config.timeout_secs.clamp(1, 10)));
        let builder = self.guard.pin(builder, url).await?;
        builder.build().map_err(|e| PreviewError::Fetch(format!("HTTP client: {e}")))
    }
}

/// A reqwest error's text without the URL (which may hold secrets from the query string).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        text = e.to_string();
        source = e.source();
    }
    if error.is_timeout() { "timed out".to_owned() } else { text }
}

/// What a page says about itself: its OpenGraph properties (with `og:title` and
/// `og:description` filled from `<title>` and `<meta name="description">` when missing) and
/// the absolute URL of its `og:image`, if any.
pub fn parse_html(body: &[u8], base: &Url) -> (Map<String, Value>, Option<Url>) {
    let text = String::from_utf8_lossy(body);
    let mut emitter = DefaultEmitter::default();
    // Switch to the raw-text states after <title>, <script>, <style> as a browser would.
    emitter.naively_switch_states(true);
    let mut properties = Map::new();
    let mut title = String::new();
    let mut in_title = false;
    let mut description = None;
    for token in Tokenizer::new_with_emitter(text.as_ref(), emitter) {
        let Ok(token) = token;
        match token {
            Token::StartTag(tag) if tag.name.as_slice() == b"meta" => {
                let attribute = |name: &str| {
                    tag.attributes.get(name.as_bytes()).map(|value| String::from_utf8_lossy(value).trim().to_owned())
                };
                let Some(content) = attribute("content") else { continue };
                let key = attribute("property").or_else(|| attribute("name")).unwrap_or_default();
                if key.starts_with("og:") && properties.len() < MAX_PROPERTIES && !properties.contains_key(&key) {
                    properties.insert(key, Value::String(shorten(&content)));
                } else if key.eq_ignore_ascii_case("description") && description.is_none() {
                    description = Some(shorten(&content));
                }
            }
            Token::StartTag(tag) if tag.name.as_slice() == b"title" => in_title = title.is_empty(),
            Token::EndTag(tag) if tag.name.as_slice() == b"title" => in_title = false,
            Token::String(s) if in_title && title.len() < MAX_PROPERTY_CHARS * 4 => {
                title.push_str(&String::from_utf8_lossy(&s));
            }
            _ => {}
        }
    }
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    if !properties.contains_key("og:title") && !title.is_empty() {
        properties.insert("og:title".into(), Value::String(shorten(&title)));
    }
    if let Some(description) = description.filter(|_| !properties.contains_key("og:description")) {
        properties.insert("og:description".into(), Value::String(description));
    }
    let image = properties
        .remove("og:image")
        .and_then(|v| v.as_str().and_then(|s| base.join(s).ok()))
        .filter(|url| matches!(url.scheme(), "http" | "https"));
    // Image details come from the image itself once it is stored.
    properties.retain(|key, _| !key.starts_with("og:image"));
    (properties, image)
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_PROPERTY_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(extra_allow: &[&str]) -> Fetcher {
        let config = UrlPreviewConfig {
            ip_range_allowlist: extra_allow.iter().map(|n| n.parse().unwrap()).collect(),
            ..UrlPreviewConfig::default()
        };
        Fetcher::new(config, "example.org")
    }

    #[test]
    fn private_and_special_addresses_are_refused_by_default() {
        let f = fetcher(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!f.allows(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(f.allows(ip.parse().unwrap()), "{ip} should be allowed");
        }
        let relaxed = fetcher(&["127.0.0.0/8"]);
        assert!(relaxed.allows("127.0.0.1".parse().unwrap()));
        assert!(!relaxed.allows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(Fetcher::parse_url("https://example.org/a").is_ok());
        assert!(Fetcher::parse_url("file:///etc/passwd").is_err());
        assert!(Fetcher::parse_url("gopher://example.org").is_err());
        assert!(Fetcher::parse_url("not a url").is_err());
    }

    #[test]
    fn opengraph_and_fallbacks_are_read() {
        let base = Url::parse("https://example.org/blog/post").unwrap();
        let html = br#"<!doctype html><html><head>
            <title> A &amp; B </title>
            <meta name="description" content="Plain description">
            <meta property="og:type" content="article">
            <meta property="og:image" content="/img/cover.png">
            <meta property="og:image:width" content="9999">
            <script>var s = "<meta property='og:title' content='not this'>";</script>
            </head><body><p>Hi</p></body></html>"#;
        let (properties, image) = parse_html(html, &base);
        assert_eq!(properties["og:title"], "A & B");
        assert_eq!(properties["og:description"], "Plain description");
        assert_eq!(properties["og:type"], "article");
        assert!(!properties.contains_key("og:image:width"));
        assert_eq!(image.unwrap().as_str(), "https://example.org/img/cover.png");

        let html = br#"<meta property="og:title" content="OG title"><title>Other</title>
            <meta property="og:image" content="javascript:alert(1)">"#;
        let (properties, image) = parse_html(html, &base);
        assert_eq!(properties["og:title"], "OG title");
        assert!(image.is_none());
        let (properties, _) = parse_html(b"\xff\xfe<<<>>>garbage", &base);
        assert!(properties.is_empty());
    }
}
