//! Loading a server certificate chain and its private key from PEM files (RFC 7468), as
//! certbot and other ACME clients write them: keys in PKCS#8, PKCS#1 or SEC1 form.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls_pemfile::Item;

/// PEM files past this size are not certificate or key files; the cap also keeps a wrong
/// path such as `/dev/zero` from reading forever.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A certificate chain and its key, ready to serve, with the names its leaf covers.
#[derive(Clone, Debug)]
pub(crate) struct LoadedPair {
    pub(crate) certified: Arc<CertifiedKey>,
    /// DNS names and IP addresses from the leaf's subjectAltName, in certificate order.
    pub(crate) names: Vec<String>,
    /// The leaf's notBefore, in seconds since the Unix epoch.
    pub(crate) not_before: Option<i64>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub(crate) not_after: Option<i64>,
}

/// Reads a file of at most [`MAX_PEM_BYTES`], with the path in the error.
pub(crate) fn read_small(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bail!(
            "{}: larger than 1 MiB, not a PEM certificate or key file",
            path.display()
        );
    }
    Ok(bytes)
}

/// Loads a full chain (leaf first) and its private key from two PEM files (they may be the
/// same file), and checks that the key belongs to the leaf.
pub(crate) fn load_pair(cert_path: &Path, key_path: &Path) -> anyhow::Result<LoadedPair> {
    let cert_pem = read_small(cert_path)?;
    let key_pem = read_small(key_path)?;
    pair_from_pem(
        &cert_pem,
        &key_pem,
        &cert_path.display().to_string(),
        &key_path.display().to_string(),
    )
}

/// [`load_pair`] on PEM text already in memory; the labels name the sources in errors.
pub(crate) fn pair_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_label: &str,
    key_label: &str,
) -> anyhow::Result<LoadedPair> {
    let cert_items = pem_items(cert_pem, cert_label)?;
    let certs: Vec<CertificateDer<'static>> = cert_items
        .iter()
        .filter_map(|item| match item {
            Item::X509Certificate(der) => Some(der.clone()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        let hint = if cert_items.iter().any(is_key) {
            " (it holds a private key: are the certificate and key files swapped?)"
        } else if !cert_pem.starts_with(b"-----") && !contains(cert_pem, b"-----BEGIN ") {
            " (no PEM text; for a DER file: openssl x509 -inform der -in FILE -out FILE.pem)"
        } else {
            ""
        };
        bail!("{cert_label} holds no certificate{hint}");
    }

    let key_items = pem_items(key_pem, key_label)?;
    let mut keys: Vec<PrivateKeyDer<'static>> = key_items.into_iter().filter_map(as_key).collect();
    let key = match keys.len() {
        1 => keys.remove(0),
        0 => bail!("{}", no_key_reason(key_pem, key_label)),
        n => bail!("{key_label} holds {n} private keys; give one key per file"),
    };
    let kind = key_kind(&key);
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        anyhow!(
            "{key_label}: unsupported key type ({kind}); mcptap serves RSA (2048 bits or more), \
             ECDSA P-256/P-384 and Ed25519 keys"
        )
    })?;
    let leaf = x509(&certs[0], cert_label, 1)?;
    // rustls never looks at the chain until a client does: check the pair now, so that a
    // wrong key is a startup (or reload) error rather than every handshake failing.
    let public_key = signing_key.public_key();
    if let Some(spki) = &public_key {
        if spki.as_ref() != leaf.public_key().raw {
            let matching = certs.iter().enumerate().skip(1).find(|(i, der)| {
                x509(der, cert_label, i + 1).is_ok_and(|c| c.public_key().raw == spki.as_ref())
            });
            if let Some((i, _)) = matching {
                bail!(
                    "the key in {key_label} matches certificate #{} in {cert_label}, not the first: \
                     put the server's own certificate first, then its intermediates",
                    i + 1
                );
            }
            bail!("the key in {key_label} does not match the certificate in {cert_label}");
        }
    }
    // SNI lookups go through webpki (see the resolver): make sure it can read the leaf.
    webpki::EndEntityCert::try_from(&certs[0])
        .map_err(|e| anyhow!("{cert_label}: the first certificate cannot be used ({e})"))?;
    let names = san_names(&leaf, cert_label)?;
    let not_before = Some(leaf.validity().not_before.timestamp());
    let not_after = Some(leaf.validity().not_after.timestamp());
    drop(leaf);
    Ok(LoadedPair {
        certified: Arc::new(CertifiedKey::new(certs, signing_key)),
        names,
        not_before,
        not_after,
    })
}

/// Every PEM section of a file that rustls-pemfile knows; other sections are skipped.
fn pem_items(pem: &[u8], label: &str) -> anyhow::Result<Vec<Item>> {
    let mut reader = pem;
    rustls_pemfile::read_all(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{label}: not a valid PEM file ({e})"))
}

fn is_key(item: &Item) -> bool {
    matches!(
        item,
        Item::Pkcs1Key(_) | Item::Pkcs8Key(_) | Item::Sec1Key(_)
    )
}

fn as_key(item: Item) -> Option<PrivateKeyDer<'static>> {
    match item {
        Item::Pkcs1Key(k) => Some(k.into()),
        Item::Pkcs8Key(k) => Some(k.into()),
        Item::Sec1Key(k) => Some(k.into()),
        _ => None,
    }
}

/// Why a key file yielded no key, in the words a developer needs to fix it.
fn no_key_reason(pem: &[u8], label: &str) -> String {
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(pem, b"Proc-Type: 4,ENCRYPTED")
    {
        return format!(
            "{label}: the private key is encrypted; give mcptap an unencrypted key \
             (openssl pkey -in {label} -out key.pem)"
        );
    }
    // A PEM label ending in PRIVATE KEY that rustls-pemfile skipped: DSA, OpenSSH, ...
    let text = String::from_utf8_lossy(pem);
    if let Some(label_text) = text
        .lines()
        .filter_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .find(|l| l.ends_with("PRIVATE KEY"))
    {
        return format!("{label}: unsupported key type ({label_text})");
    }
    match pem_items(pem, label) {
        Ok(items) if items.iter().any(|i| matches!(i, Item::X509Certificate(_))) => format!(
            "{label} holds no private key (it holds a certificate: are the certificate and key files swapped?)"
        ),
        _ => format!("{label} holds no private key"),
    }
}

/// A short description of a key for error messages, from the algorithm OIDs in its DER.
fn key_kind(key: &PrivateKeyDer<'_>) -> &'static str {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const ED448: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x71];
    const X25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x6e];
    let der = key.secret_der();
    let table: [(&[u8], &str); 7] = [
        (P521, "ECDSA P-521"),
        (P384, "ECDSA P-384"),
        (P256, "ECDSA P-256"),
        (ED448, "Ed448"),
        (ED25519, "Ed25519"),
        (X25519, "X25519, a key-agreement key"),
        (RSA, "RSA"),
    ];
    if let Some((_, name)) = table.iter().find(|(oid, _)| contains(der, oid)) {
        return name;
    }
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA",
        PrivateKeyDer::Sec1(_) => "EC",
        _ => "unknown algorithm",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn x509<'a>(
    der: &'a CertificateDer<'_>,
    label: &str,
    index: usize,
) -> anyhow::Result<x509_parser::certificate::X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| anyhow!("{label}: certificate #{index} cannot be parsed ({e})"))
}

/// The DNS names and IP addresses of the subjectAltName extension (RFC 5280 §4.2.1.6); the
/// subject CN is ignored, as browsers and rustls clients ignore it.
fn san_names(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    label: &str,
) -> anyhow::Result<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow!("{label}: the subjectAltName cannot be parsed ({e})"))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect())
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::LocalCa;
    use crate::tls::tests::leaf_for_key;

    fn ca() -> (tempfile::TempDir, LocalCa) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = LocalCa::load_or_create(&dir.path().join("ca")).expect("CA");
        (dir, ca)
    }

    fn load(cert: &str, key: &str) -> anyhow::Result<LoadedPair> {
        pair_from_pem(cert.as_bytes(), key.as_bytes(), "c.pem", "k.pem")
    }

    #[test]
    fn every_supported_key_form_loads() {
        let (_dir, ca) = ca();
        let mut forms: Vec<(&str, String)> = vec![
            ("RSA PKCS#1", include_str!("testdata/rsa-pkcs1.pem").into()),
            ("RSA PKCS#8", include_str!("testdata/rsa-pkcs8.pem").into()),
            ("P-256 SEC1", include_str!("testdata/ec256-sec1.pem").into()),
            ("P-384 SEC1", include_str!("testdata/ec384-sec1.pem").into()),
        ];
        for (name, alg) in [
            ("P-256 PKCS#8", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("P-384 PKCS#8", &rcgen::PKCS_ECDSA_P384_SHA384),
            ("Ed25519 PKCS#8", &rcgen::PKCS_ED25519),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).expect("keygen");
            forms.push((name, key.serialize_pem()));
        }
        // The fixtures were written by openssl in these forms; make sure they still are.
        assert!(forms[0].1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(forms[2].1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert!(forms[3].1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        for (name, key_pem) in &forms {
            let cert = leaf_for_key(&ca, key_pem, &["a.test", "127.0.0.1"]);
            let pair = load(&cert, key_pem).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(pair.names, ["a.test", "127.0.0.1"], "{name}");
            assert!(pair.certified.keys_match().is_ok(), "{name}");
        }
    }

    #[test]
    fn the_key_may_share_the_certificate_file() {
        let (_dir, ca) = ca();
        let (cert, key) = ca.issue_leaf(&["a.test".into()]).expect("leaf");
        let both = format!("{cert}{key}");
        let pair = load(&both, &both).expect("combined file");
        assert_eq!(pair.names, ["a.test"]);
    }

    #[test]
    fn errors_say_what_is_wrong_in_one_line() {
        let (_dir, ca) = ca();
        let (cert_a, key_a) = ca.issue_leaf(&["a.test".into()]).expect("leaf");
        let (_cert_b, key_b) = ca.issue_leaf(&["b.test".into()]).expect("leaf");
        let p521 = include_str!("testdata/ec521-sec1.pem");
        let encrypted = include_str!("testdata/ed25519-encrypted.pem");
        let cases: Vec<(String, String, &str)> = vec![
            (
                key_a.clone(),
                key_a.clone(),
                "c.pem holds no certificate (it holds a private key",
            ),
            (
                "hello".into(),
                key_a.clone(),
                "c.pem holds no certificate (no PEM text",
            ),
            (
                cert_a.clone(),
                cert_a.clone(),
                "k.pem holds no private key (it holds a certificate",
            ),
            (cert_a.clone(), String::new(), "k.pem holds no private key"),
            (
                cert_a.clone(),
                key_b.clone(),
                "the key in k.pem does not match the certificate in c.pem",
            ),
            (
                cert_a.clone(),
                p521.into(),
                "k.pem: unsupported key type (ECDSA P-521)",
            ),
            (
                cert_a.clone(),
                encrypted.into(),
                "k.pem: the private key is encrypted",
            ),
            (
                cert_a.clone(),
                "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n".into(),
                "k.pem: unsupported key type (DSA PRIVATE KEY)",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
                key_a.clone(),
                "c.pem: not a valid PEM file",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                key_a.clone(),
                "c.pem: certificate #1 cannot be parsed",
            ),
            (
                format!("{cert_a}{key_a}"),
                format!("{key_a}{key_b}"),
                "k.pem holds 2 private keys",
            ),
        ];
        for (cert, key, want) in cases {
            let err = format!("{:#}", load(&cert, &key).expect_err(want));
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn a_chain_in_the_wrong_order_is_named() {
        let (_dir, ca) = ca();
        let (cert, key) = ca.issue_leaf(&["a.test".into()]).expect("leaf");
        let reversed = format!("{}{cert}", ca.cert_pem());
        let err = format!("{:#}", load(&reversed, &key).expect_err("wrong order"));
        assert!(
            err.starts_with("the key in k.pem matches certificate #2 in c.pem, not the first"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_oversized_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let err = format!("{:#}", load_pair(&missing, &missing).expect_err("missing"));
        assert!(
            err.starts_with("cannot read ") && err.contains("nope.pem"),
            "{err}"
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; (MAX_PEM_BYTES + 10) as usize]).expect("write");
        let err = format!("{:#}", load_pair(&big, &big).expect_err("big"));
        assert!(err.contains("larger than 1 MiB"), "{err}");
    }
}
