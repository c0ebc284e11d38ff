//! TLS for the tests: a private CA with server and client certificates made on the spot
//! ([`Pki`]), and a blocking TLS client that speaks raw HTTP/1.1 over rustls ([`exchange`]),
//! its answers parsed like the plain client's.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::http::{self, EXCHANGE_TIMEOUT, Response};

/// A certificate and its key, DER and PEM.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key_pkcs8: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signing the CA"),
        }
    }

    pub fn cert(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Identity {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "companion test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate named `name`.
    pub fn client(&self, name: &str) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Identity {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        Identity {
            cert: cert.der().clone(),
            key_pkcs8: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The files a TLS service needs, written to a directory: `ca.pem` (the CA that signed the
/// server and the good client), `server.pem`, `server.key`, and the CA in memory to issue more.
pub struct Pki {
    pub ca: Ca,
    pub server: Identity,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new("companion test CA");
        let server = ca.server();
        let (ca_file, cert_file, key_file) = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        );
        std::fs::write(&ca_file, ca.pem()).expect("writing ca.pem");
        std::fs::write(&cert_file, &server.cert_pem).expect("writing server.pem");
        std::fs::write(&key_file, &server.key_pem).expect("writing server.key");
        Pki {
            ca,
            server,
            ca_file,
            cert_file,
            key_file,
        }
    }
}

/// A client configuration trusting `roots`, presenting `identity` when given, offering
/// HTTP/1.1 only.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<&Identity>,
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("adding a root");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(store);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Sends `raw` over TLS (server name 127.0.0.1) and reads the whole response (until the server
/// closes). A refused handshake or a connection closed before any byte is an `Err`.
pub fn exchange(addr: SocketAddr, config: Arc<ClientConfig>, raw: &[u8]) -> io::Result<Response> {
    let name = ServerName::IpAddress(addr.ip().into());
    let connection = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let socket = TcpStream::connect_timeout(&addr, EXCHANGE_TIMEOUT)?;
    socket.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    socket.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    let mut stream = StreamOwned::new(connection, socket);
    stream.write_all(raw)?;
    stream.flush()?;
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        // A server that closes without close_notify after a whole answer.
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof && !received.is_empty() => {}
        Err(err) => return Err(err),
    }
    http::parse_response(&received)
}

/// `GET path` over TLS with `Connection: close` and `extra` raw header lines.
pub fn get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    extra: &str,
) -> io::Result<Response> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    exchange(addr, config, raw.as_bytes())
}
