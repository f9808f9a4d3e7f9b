//! A local certificate authority for development: one CA kept on disk and reused, and the
//! short-lived server certificates it signs (X.509 profile of RFC 5280).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};

use super::files::read_small;

/// The CA certificate's file name in the certificates directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in the certificates directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Leaf lifetime: like ACME certificates, short enough that a leaked key ages out.
const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The names a leaf gets when none are given: what local clients connect to.
pub fn default_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// A CA whose certificate and key live in a directory: `ca.pem` and `ca-key.pem`.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA in `dir`, or creates it there (directory 0700 when created, key 0600)
    /// when neither file exists. An existing CA is parsed back from its files, so that new
    /// leaves chain to the very certificate clients were told to trust.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<LocalCa> {
        ensure_private_dir(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(dir, &cert_path, &key_path),
            (false, false) => Self::create(dir, &cert_path, &key_path),
            (true, false) => bail!(
                "{} exists but {} does not: restore the key, or remove {} to make a new CA \
                 (clients must then trust the new one)",
                cert_path.display(),
                key_path.display(),
                cert_path.display()
            ),
            (false, true) => bail!(
                "{} exists but {} does not: restore the certificate, or remove {} to make a new CA",
                key_path.display(),
                cert_path.display(),
                key_path.display()
            ),
        }
    }

    fn load(dir: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<LocalCa> {
        warn_if_readable_by_others(key_path);
        let cert_pem = String::from_utf8(read_small(cert_path)?)
            .map_err(|_| anyhow!("{}: not a PEM file (not text)", cert_path.display()))?;
        let key_pem = String::from_utf8(read_small(key_path)?)
            .map_err(|_| anyhow!("{}: not a PEM file (not text)", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            anyhow!(
                "{}: not a CA key mcptap can use ({e}; it needs a PKCS#8 key)",
                key_path.display()
            )
        })?;
        let public_key = key.subject_public_key_info();
        let der = pem_certificate(&cert_pem)
            .ok_or_else(|| anyhow!("{} holds no certificate", cert_path.display()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            anyhow!(
                "{}: the CA certificate cannot be parsed ({e})",
                cert_path.display()
            )
        })?;
        if parsed.public_key().raw != public_key.as_slice() {
            bail!(
                "the key in {} does not match the CA certificate in {}",
                key_path.display(),
                cert_path.display()
            );
        }
        if !parsed.is_ca() {
            bail!("{} is not a CA certificate", cert_path.display());
        }
        let now = unix_now();
        if parsed.validity().not_after.timestamp() < now {
            bail!(
                "the local CA {} has expired: remove {} and {} to make a new one",
                cert_path.display(),
                cert_path.display(),
                key_path.display()
            );
        }
        drop(parsed);
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
            anyhow!(
                "{}: the CA certificate cannot be used ({e})",
                cert_path.display()
            )
        })?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert_pem,
            issuer,
        })
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<LocalCa> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the CA key")?;
        // A few bytes of the public key tell this CA apart from others in a trust store.
        let tag: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("mcptap local CA {tag}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "mcptap (development only)");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = earlier(now, DAY).into();
        params.not_after = later(now, CA_LIFETIME).into();
        let cert = params
            .self_signed(&key)
            .context("making the CA certificate")?;
        // Key first: a crash in between leaves a key without certificate, which the next
        // run reports instead of silently making a CA nobody has the key of.
        write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
        // Parse the CA back exactly as a later run will, so both paths sign alike.
        Self::load(dir, cert_path, key_path)
    }

    /// The directory holding the CA.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/ca.pem`: the file clients must trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// `dir/ca-key.pem`.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(CA_KEY_FILE)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for `names` (DNS names, `*.` wildcards, IPv4 and IPv6
    /// addresses) with a new ECDSA P-256 key, valid for 90 days, for TLS server use only.
    /// Returns `(certificate chain PEM, private key PEM)`; the chain is the leaf alone, since
    /// clients must hold the CA certificate anyway.
    pub fn issue_leaf(&self, names: &[String]) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the certificate key")?;
        let cert = self.sign_leaf(names, &key)?;
        Ok((cert, key.serialize_pem()))
    }

    /// Signs a server certificate for `names` over `public_key`.
    pub(crate) fn sign_leaf(
        &self,
        names: &[String],
        public_key: &impl PublicKeyData,
    ) -> anyhow::Result<String> {
        let Some(first) = names.first() else {
            bail!("no host name given for the certificate");
        };
        for name in names {
            check_host(name)?;
        }
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| anyhow!("cannot put {names:?} in a certificate: {e}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        // An hour of slack for clients whose clock runs a little behind.
        params.not_before = earlier(now, Duration::from_secs(3600)).into();
        params.not_after = later(now, LEAF_LIFETIME).into();
        let cert = params
            .signed_by(public_key, &self.issuer)
            .context("signing the certificate")?;
        Ok(cert.pem())
    }
}

/// What [`certs_init`] wrote, and how to make clients trust it.
#[derive(Debug, Clone)]
pub struct CertsInit {
    /// The CA certificate clients must trust.
    pub ca: PathBuf,
    /// The server certificate (`dir/<first host>.pem`).
    pub cert: PathBuf,
    /// Its private key (`dir/<first host>-key.pem`, mode 0600).
    pub key: PathBuf,
    /// Whether this call created the CA (else it reused the one in `dir`).
    pub created_ca: bool,
    /// Multi-line text: how to trust the CA from curl, Node, Python and system stores.
    pub trust_instructions: String,
}

/// Makes (or reuses) the CA in `dir` and writes a fresh server certificate for `hosts`
/// (default: localhost, 127.0.0.1, ::1) as `dir/<first host>.pem` and `-key.pem`,
/// replacing earlier ones.
pub fn certs_init(dir: &Path, hosts: &[String]) -> anyhow::Result<CertsInit> {
    let hosts = if hosts.is_empty() {
        default_hosts()
    } else {
        hosts.to_vec()
    };
    let created_ca = !dir.join(CA_CERT_FILE).exists();
    let ca = LocalCa::load_or_create(dir)?;
    let (cert_pem, key_pem) = ca.issue_leaf(&hosts)?;
    let stem = file_stem(&hosts[0]);
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    replace_file(&key, key_pem.as_bytes(), 0o600)?;
    replace_file(&cert, cert_pem.as_bytes(), 0o644)?;
    Ok(CertsInit {
        trust_instructions: trust_instructions(&ca.cert_path(), &ca.key_path()),
        ca: ca.cert_path(),
        cert,
        key,
        created_ca,
    })
}

/// How to trust the CA at `ca` from the usual clients, one per line.
pub fn trust_instructions(ca: &Path, ca_key: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let ca = shell_quote(&abs(ca).display().to_string());
    let key = abs(ca_key).display().to_string();
    format!(
        "To make clients trust certificates from this CA ({ca}):\n\
         \x20 curl:           curl --cacert {ca} https://localhost:PORT/\n\
         \x20 Node.js:        NODE_EXTRA_CA_CERTS={ca} node app.js\n\
         \x20 Python:         SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} python app.py   (replaces the default CA bundle for that process)\n\
         \x20 Debian/Ubuntu:  sudo cp {ca} /usr/local/share/ca-certificates/mcptap.crt && sudo update-ca-certificates\n\
         \x20 macOS:          sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}\n\
         \x20 Windows:        certutil -addstore -f ROOT {ca}   (from an administrator prompt)\n\
         \x20 Firefox keeps its own store: Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import.\n\
         The CA key ({key}) can sign certificates for any name: keep it private, and trust this CA on your own machine only.\n"
    )
}

/// `s`, quoted for a POSIX shell when it holds anything but safe characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A file name for a host: `*.a.test` -> `_wildcard.a.test`, `::1` -> `__1`.
pub(crate) fn file_stem(host: &str) -> String {
    let host = match host.strip_prefix("*.") {
        Some(rest) => format!("_wildcard.{rest}"),
        None => host.to_string(),
    };
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Refuses what would make a certificate that no client accepts.
pub(crate) fn check_host(name: &str) -> anyhow::Result<()> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let dns = name.strip_prefix("*.").unwrap_or(name);
    if dns.contains('*') || rustls::pki_types::DnsName::try_from(dns).is_err() {
        bail!("{name:?} is not a valid host name or IP address");
    }
    Ok(())
}

/// The first `CERTIFICATE` section of a PEM text.
fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let mut reader = pem.as_bytes();
    let first = rustls_pemfile::certs(&mut reader).next();
    first.and_then(Result::ok).map(|der| der.to_vec())
}

/// `t - d`, without the panic of `SystemTime - Duration` on a clock set near 1970.
fn earlier(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// `t + d`, without the panic on overflow.
fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Creates `dir` (and parents) as 0700 when missing; an existing directory is left as it is.
pub(crate) fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        bail!("{} exists and is not a directory", dir.display());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    set_mode(dir, 0o700)
}

/// Writes a file that must not exist yet, with `mode` from the start (no window in which a
/// key is readable by others).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// Replaces `path` atomically (write a sibling, then rename), so that a server watching the
/// file never reads half of it.
pub(crate) fn replace_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("cannot replace {}: {e}", path.display())
    })
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| anyhow!("cannot set the permissions of {}: {e}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

pub(crate) fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by other users: chmod 600 it",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn the_ca_is_created_once_and_reused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("certs");
        let first = LocalCa::load_or_create(&dir).expect("create");
        let pem = std::fs::read_to_string(dir.join(CA_CERT_FILE)).expect("ca.pem");
        assert_eq!(first.cert_pem(), pem);
        let key = std::fs::read(dir.join(CA_KEY_FILE)).expect("ca-key.pem");
        let second = LocalCa::load_or_create(&dir).expect("load");
        assert_eq!(
            second.cert_pem(),
            pem,
            "the CA certificate is not rewritten"
        );
        assert_eq!(std::fs::read(dir.join(CA_KEY_FILE)).expect("key"), key);
        // A leaf from the reloaded CA verifies against the CA certificate on disk.
        let (leaf, _key) = second.issue_leaf(&["a.test".into()]).expect("leaf");
        verify_chain(&pem, &leaf, "a.test");
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        }
    }

    /// Checks `leaf` chains to `ca` and is valid for `name`, as a rustls client would.
    fn verify_chain(ca: &str, leaf: &str, name: &str) {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem_certificate(ca).expect("ca der").into())
            .expect("root");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .expect("verifier");
        let leaf = pem_certificate(leaf).expect("leaf der");
        verifier
            .verify_server_cert(
                &leaf.into(),
                &[],
                &rustls::pki_types::ServerName::try_from(name.to_string()).expect("name"),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("the leaf chains to the CA on disk");
    }

    #[test]
    fn a_half_present_ca_is_an_error_not_a_new_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        LocalCa::load_or_create(dir).expect("create");
        std::fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
        let err = format!("{:#}", LocalCa::load_or_create(dir).expect_err("no key"));
        assert!(err.contains("ca-key.pem does not"), "{err}");
        assert!(dir.join(CA_CERT_FILE).exists());
    }

    #[test]
    fn a_foreign_key_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        LocalCa::load_or_create(&a).expect("a");
        LocalCa::load_or_create(&b).expect("b");
        std::fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).expect("copy");
        let err = format!("{:#}", LocalCa::load_or_create(&a).expect_err("mismatch"));
        assert!(err.contains("does not match the CA certificate"), "{err}");
    }

    #[test]
    fn leaves_cover_dns_names_and_ip_addresses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = LocalCa::load_or_create(tmp.path()).expect("ca");
        let (leaf, key) = ca.issue_leaf(&default_hosts()).expect("leaf");
        for name in ["localhost", "127.0.0.1", "::1"] {
            verify_chain(ca.cert_pem(), &leaf, name);
        }
        let pair = super::super::files::pair_from_pem(leaf.as_bytes(), key.as_bytes(), "c", "k")
            .expect("loads");
        assert_eq!(pair.names, ["localhost", "127.0.0.1", "::1"]);
        let der = pem_certificate(&leaf).expect("der");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let days = (parsed.validity().not_after.timestamp() - unix_now()) / 86_400;
        assert!((89..=90).contains(&days), "{days} days");
        let eku = parsed
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!parsed.is_ca());
        let wild = ca.issue_leaf(&["*.a.test".into()]).expect("wildcard").0;
        verify_chain(ca.cert_pem(), &wild, "x.a.test");
        for bad in ["", "a b", "*.*.a", "a.*.b"] {
            let err = ca.issue_leaf(&[bad.to_string()]).expect_err(bad);
            assert!(err.to_string().contains("not a valid host name"), "{err}");
        }
        assert!(ca.issue_leaf(&[]).is_err());
    }

    #[test]
    fn certs_init_writes_private_files_and_says_how_to_trust() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("certs");
        let init = certs_init(&dir, &[]).expect("init");
        assert!(init.created_ca);
        assert_eq!(init.ca, dir.join("ca.pem"));
        assert_eq!(init.cert, dir.join("localhost.pem"));
        assert_eq!(init.key, dir.join("localhost-key.pem"));
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(&init.key), 0o600);
        }
        let ca_abs = std::fs::canonicalize(&init.ca).expect("abs");
        let ca_abs = ca_abs.display();
        for want in [
            format!("curl --cacert {ca_abs}"),
            format!("NODE_EXTRA_CA_CERTS={ca_abs}"),
            format!("SSL_CERT_FILE={ca_abs}"),
            format!("REQUESTS_CA_BUNDLE={ca_abs}"),
            format!("cp {ca_abs} /usr/local/share/ca-certificates/mcptap.crt && sudo update-ca-certificates"),
            "security add-trusted-cert".to_string(),
        ] {
            assert!(init.trust_instructions.contains(&want), "missing {want:?} in\n{}", init.trust_instructions);
        }
        let ca_pem = std::fs::read_to_string(&init.ca).expect("ca");
        let leaf = std::fs::read_to_string(&init.cert).expect("leaf");
        verify_chain(&ca_pem, &leaf, "localhost");

        // Again, for other hosts: same CA, new leaf files beside the first ones.
        let again = certs_init(&dir, &["*.dev.test".into(), "::1".into()]).expect("again");
        assert!(!again.created_ca);
        assert_eq!(std::fs::read_to_string(&again.ca).expect("ca"), ca_pem);
        assert_eq!(again.cert, dir.join("_wildcard.dev.test.pem"));
        verify_chain(
            &ca_pem,
            &std::fs::read_to_string(&again.cert).expect("leaf"),
            "x.dev.test",
        );
        #[cfg(unix)]
        assert_eq!(mode(&again.key), 0o600);
    }

    #[test]
    fn names_make_safe_file_names_and_paths_are_quoted() {
        assert_eq!(file_stem("::1"), "__1");
        assert_eq!(file_stem("a.test"), "a.test");
        assert_eq!(file_stem("*.a.test"), "_wildcard.a.test");
        assert_eq!(shell_quote("/tmp/a b/ca.pem"), "'/tmp/a b/ca.pem'");
        assert_eq!(shell_quote("/tmp/ca.pem"), "/tmp/ca.pem");
    }
}
