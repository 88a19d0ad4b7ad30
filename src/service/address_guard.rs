//! The address guard for outbound HTTP to URLs that users choose (URL previews, push gateways)
//! and to other servers (federation),
//! against server-side request forgery: it resolves the host itself, checks each address
//! against an allow list and a deny list (the allow list wins), and pins the connection to a
//! checked address (`reqwest::ClientBuilder::resolve`), so a DNS answer that changes between
//! the check and the connection (DNS rebinding) cannot get past it. Callers follow no
//! redirects on their own: each hop goes through the guard again.

use std::net::{IpAddr, SocketAddr};

use reqwest::{ClientBuilder, Url};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The URL's host is, or resolves only to, addresses the lists refuse.
    #[error("{0}")]
    Forbidden(String),
    /// The URL is not an http(s) URL with a host.
    #[error("{0}")]
    InvalidUrl(String),
    /// The host name could not be resolved.
    #[error("{0}")]
    Resolve(String),
}

/// Which addresses one kind of outbound request may reach.
#[derive(Debug, Clone)]
pub struct AddressGuard {
    denylist: Vec<ipnet::IpNet>,
    allowlist: Vec<ipnet::IpNet>,
    /// What the requests are, for error messages ("URL previews").
    purpose: &'static str,
}

impl AddressGuard {
    pub fn new(denylist: Vec<ipnet::IpNet>, allowlist: Vec<ipnet::IpNet>, purpose: &'static str) -> Self {
        Self { denylist, allowlist, purpose }
    }

    /// Whether `ip` may be connected to: the allow list wins over the deny list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allowlist.iter().any(|net| net.contains(&ip)) || !self.denylist.iter().any(|net| net.contains(&ip))
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), GuardError> {
        if self.allows(ip) {
            Ok(())
        } else {
            Err(GuardError::Forbidden(format!("{} to {ip} are not allowed", self.purpose)))
        }
    }

    /// Checks `url`'s host and pins `builder` to an allowed address of it: an IP literal must
    /// be allowed itself; a name must resolve to at least one allowed address.
    pub async fn pin(&self, builder: ClientBuilder, url: &Url) -> Result<ClientBuilder, GuardError> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)).map(|()| builder),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)).map(|()| builder),
            Some(url::Host::Domain(domain)) => {
                let port = url.port_or_known_default().unwrap_or(80);
                let address = self.resolve(domain, port).await?;
                Ok(builder.resolve(domain, address))
            }
            None => Err(GuardError::InvalidUrl("The URL has no host".into())),
        }
    }

    /// An allowed address of `host` (an IP literal, bracketed or not, or a name to resolve) at
    /// `port`: the literal itself if it is allowed, else the first allowed address the name
    /// resolves to.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, GuardError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check(ip).map(|()| SocketAddr::new(ip, port));
        }
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| GuardError::Resolve(format!("Could not resolve {host}: {e}")))?
            .collect();
        match addresses.iter().find(|addr| self.allows(addr.ip())) {
            Some(address) => Ok(*address),
            None if addresses.is_empty() => Err(GuardError::Resolve(format!("{host} has no address"))),
            None => Err(GuardError::Forbidden(format!("{} to {host} are not allowed", self.purpose))),
        }
    }
}
