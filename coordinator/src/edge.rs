//! The coordinator's edge on the open internet, as configured: whose
//! forwarding headers to believe, built-in TLS, timeouts, registration
//! limits and invites, and how many large bodies are read at once
//! ([`Edge`], part of [`crate::Config`]); and the settings an operator
//! gives for it ([`EdgeSettings`], [`RegistrationSettings`]).
//!
//! ```toml
//! [edge]
//! trusted_proxy = ["10.0.0.0/8"]   # read the client from these peers' headers
//! proxy_header = "x-forwarded-for" # or "forwarded" (RFC 7239)
//! tls_cert = "/etc/wasm-at-home/cert.pem"
//! tls_key = "/etc/wasm-at-home/key.pem"
//! request_timeout_secs = 300
//! header_read_timeout_secs = 10
//! large_bodies = 8
//! [registration]
//! per_minute = 6
//! burst = 3
//! invites_only = false
//! ```

use ipnet::IpNet;
use std::path::PathBuf;
use std::time::Duration;

/// Which forwarding header a trusted proxy writes. Only one is read: a
/// proxy that appends to `X-Forwarded-For` passes a client's own
/// `Forwarded` through untouched, so reading both would let the client
/// choose its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most
    /// load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The certificate chain and private key of built-in TLS (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Registration's limits: per client address, and whether an invite is
/// needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Registrations a client address may make per minute, on average.
    pub per_minute: u32,
    /// How many of them may come at once.
    pub burst: u32,
    /// A registration must spend a use of an invite token
    /// (`coordinator invites create`).
    pub invites_only: bool,
}

/// The edge's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Peers whose forwarding headers name the client; nobody else's are
    /// read.
    pub trusted_proxies: Vec<IpNet>,
    pub proxy_header: ProxyHeader,
    /// Built-in TLS; `None` serves plain HTTP (behind a TLS-terminating
    /// proxy, or on loopback).
    pub tls: Option<TlsFiles>,
    /// The longest a request may take until its answer starts, body
    /// included (a client that sends its body slowly is cut off).
    pub request_timeout: Duration,
    /// The longest a client may take to send a request's headers (and the
    /// TLS handshake before them); an idle keep-alive connection is closed
    /// after it too.
    pub header_read_timeout: Duration,
    pub registration: Registration,
    /// Bodies larger than [`LARGE_BODY`] read at once; more are answered
    /// 503 with `Retry-After`.
    pub large_bodies: usize,
}

/// A body at least this large counts against [`Edge::large_bodies`].
pub const LARGE_BODY: usize = 1 << 20;

impl Default for Edge {
    fn default() -> Self {
        Edge {
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::default(),
            tls: None,
            request_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            registration: Registration {
                per_minute: 6,
                burst: 3,
                invites_only: false,
            },
            large_bodies: 8,
        }
    }
}

/// The edge's settings (`[edge]`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettings {
    /// A proxy (CIDR, e.g. 10.0.0.0/8 or 203.0.113.7/32) whose forwarding
    /// header names the client; repeat for more. Without it the peer
    /// address is the client, whatever the headers say.
    #[arg(
        long = "trusted-proxy",
        env = "WASM_AT_HOME_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trusted_proxy: Vec<String>,
    /// The header the trusted proxies write [default: x-forwarded-for].
    #[arg(long, env = "WASM_AT_HOME_PROXY_HEADER")]
    pub proxy_header: Option<ProxyHeader>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "WASM_AT_HOME_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "WASM_AT_HOME_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a request may take until its answer starts, body included
    /// [default: 300].
    #[arg(long, env = "WASM_AT_HOME_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds a client may take to send a request's headers [default: 10].
    #[arg(long, env = "WASM_AT_HOME_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Bodies of 1 MiB or more read at once [default: 8].
    #[arg(long, env = "WASM_AT_HOME_LARGE_BODIES")]
    pub large_bodies: Option<usize>,
}

/// Registration's settings (`[registration]`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    /// Registrations per minute a client address may make [default: 6].
    #[arg(
        long = "registrations-per-minute",
        env = "WASM_AT_HOME_REGISTRATIONS_PER_MINUTE"
    )]
    pub per_minute: Option<u32>,
    /// Registrations a client address may make at once [default: 3].
    #[arg(long = "registration-burst", env = "WASM_AT_HOME_REGISTRATION_BURST")]
    pub burst: Option<u32>,
    /// Registration needs an invite token (`coordinator invites create`).
    #[arg(
        long = "invites-only",
        env = "WASM_AT_HOME_INVITES_ONLY",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub invites_only: Option<bool>,
}

impl EdgeSettings {
    /// These settings where given, `other` where not.
    pub fn or(self, other: EdgeSettings) -> EdgeSettings {
        EdgeSettings {
            trusted_proxy: if self.trusted_proxy.is_empty() {
                other.trusted_proxy
            } else {
                self.trusted_proxy
            },
            proxy_header: self.proxy_header.or(other.proxy_header),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            request_timeout_secs: self.request_timeout_secs.or(other.request_timeout_secs),
            header_read_timeout_secs: self
                .header_read_timeout_secs
                .or(other.header_read_timeout_secs),
            large_bodies: self.large_bodies.or(other.large_bodies),
        }
    }

    /// Applies these settings to `edge`, refusing bad values by name. The
    /// TLS files are read at start ([`crate::tls`]), where a bad one is
    /// refused by name too.
    pub fn apply(self, edge: &mut Edge) -> anyhow::Result<()> {
        edge.trusted_proxies = self
            .trusted_proxy
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<_>>()?;
        edge.proxy_header = self.proxy_header.unwrap_or(edge.proxy_header);
        edge.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => edge.tls.take(),
            (Some(_), None) => anyhow::bail!("tls_cert is set but tls_key is not: give both"),
            (None, Some(_)) => anyhow::bail!("tls_key is set but tls_cert is not: give both"),
        };
        if let Some(s) = self.request_timeout_secs {
            anyhow::ensure!(
                (1..=86_400).contains(&s),
                "request_timeout_secs must be between 1 and 86400, not {s}"
            );
            edge.request_timeout = Duration::from_secs(s);
        }
        if let Some(s) = self.header_read_timeout_secs {
            anyhow::ensure!(
                (1..=600).contains(&s),
                "header_read_timeout_secs must be between 1 and 600, not {s}"
            );
            edge.header_read_timeout = Duration::from_secs(s);
        }
        if let Some(n) = self.large_bodies {
            anyhow::ensure!(
                (1..=1024).contains(&n),
                "large_bodies must be between 1 and 1024, not {n}"
            );
            edge.large_bodies = n;
        }
        Ok(())
    }
}

impl RegistrationSettings {
    pub fn or(self, other: RegistrationSettings) -> RegistrationSettings {
        RegistrationSettings {
            per_minute: self.per_minute.or(other.per_minute),
            burst: self.burst.or(other.burst),
            invites_only: self.invites_only.or(other.invites_only),
        }
    }

    pub fn apply(self, r: &mut Registration) -> anyhow::Result<()> {
        if let Some(n) = self.per_minute {
            anyhow::ensure!(
                (1..=1_000_000).contains(&n),
                "registration.per_minute must be between 1 and 1000000, not {n}"
            );
            r.per_minute = n;
        }
        if let Some(n) = self.burst {
            anyhow::ensure!(
                (1..=1_000_000).contains(&n),
                "registration.burst must be between 1 and 1000000, not {n}"
            );
            r.burst = n;
        }
        r.invites_only = self.invites_only.unwrap_or(r.invites_only);
        Ok(())
    }
}

/// A CIDR such as `10.0.0.0/8`, or a lone address (a /32 or /128).
fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        anyhow::anyhow!("trusted_proxy {s:?} is neither a CIDR (10.0.0.0/8) nor an address")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses_and_anything_else_is_refused_by_name() {
        let mut edge = Edge::default();
        EdgeSettings {
            trusted_proxy: vec!["10.1.2.3/8".into(), "2001:db8::1".into()],
            ..EdgeSettings::default()
        }
        .apply(&mut edge)
        .unwrap();
        assert_eq!(
            edge.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "2001:db8::1/128".parse().unwrap()
            ]
        );
        let e = EdgeSettings {
            trusted_proxy: vec!["10.0.0.0/33".into()],
            ..EdgeSettings::default()
        }
        .apply(&mut Edge::default())
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("trusted_proxy") && e.contains("10.0.0.0/33"),
            "{e}"
        );
    }

    #[test]
    fn trusted_proxy_flags_repeat_and_split_on_commas() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            edge: EdgeSettings,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "serve",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "192.168.0.0/16,2001:db8::/32",
            "--proxy-header",
            "forwarded",
        ])
        .unwrap();
        assert_eq!(
            cli.edge.trusted_proxy,
            ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]
        );
        assert_eq!(cli.edge.proxy_header, Some(ProxyHeader::Forwarded));
        // Given flags win over the file's list as a whole.
        let file = EdgeSettings {
            trusted_proxy: vec!["172.16.0.0/12".into()],
            ..EdgeSettings::default()
        };
        assert_eq!(cli.edge.clone().or(file.clone()).trusted_proxy.len(), 3);
        assert_eq!(
            EdgeSettings::default().or(file).trusted_proxy,
            ["172.16.0.0/12"]
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_by_name() {
        let e = EdgeSettings {
            tls_cert: Some("cert.pem".into()),
            ..EdgeSettings::default()
        }
        .apply(&mut Edge::default())
        .unwrap_err()
        .to_string();
        assert!(e.contains("tls_key"), "{e}");
    }

    #[test]
    fn the_file_gives_the_edge_and_registration_sections() {
        #[derive(serde::Deserialize)]
        struct File {
            edge: EdgeSettings,
            registration: RegistrationSettings,
        }
        let f: File = toml::from_str(
            "[edge]\ntrusted_proxy = [\"192.168.0.0/16\"]\nproxy_header = \"forwarded\"\n\
             [registration]\nper_minute = 2\ninvites_only = true\n",
        )
        .unwrap();
        let mut edge = Edge::default();
        f.edge.apply(&mut edge).unwrap();
        f.registration.apply(&mut edge.registration).unwrap();
        assert_eq!(edge.proxy_header, ProxyHeader::Forwarded);
        assert_eq!(edge.registration.per_minute, 2);
        assert_eq!(edge.registration.burst, 3, "default kept");
        assert!(edge.registration.invites_only);
    }
}
