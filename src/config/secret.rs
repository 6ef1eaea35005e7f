//! Secrets: provider keys kept for sending upstream, client keys kept only as hashes.
//!
//! A secret is written in one of several forms (`secret`, `secret_env`, `secret_file`, and
//! for client keys `secret_sha256`); this module checks that exactly one is given and reads
//! it. It reads the environment and small files, so it runs only at load, never per request.
//! Nothing here prints a secret: [`Secret`] shows as `<redacted>` and a clear client secret
//! is dropped as soon as it is hashed.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::error::Problems;
use super::validate::read_limited;

/// Largest `secret_file` read, in bytes; keys are well under a kilobyte.
const SECRET_FILE_LIMIT: u64 = 64 << 10;

/// A provider key's secret, kept to be sent upstream. Debug and Display print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from somewhere other than a config file (tests, tools).
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for building the upstream request. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The SHA-256 of a client key's secret (its UTF-8 bytes). The clear secret is never kept.
///
/// The hash is not secret (configs may hold it as `secret_sha256`), but Debug shows only
/// its first four bytes to keep logs short.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySecretHash([u8; 32]);

impl KeySecretHash {
    /// A digest as stored.
    pub fn from_bytes(digest: [u8; 32]) -> KeySecretHash {
        KeySecretHash(digest)
    }

    /// Hashes a presented or configured client secret.
    pub fn of(secret: &[u8]) -> KeySecretHash {
        KeySecretHash(Sha256::digest(secret).into())
    }

    /// Reads 64 hex digits (either case). `None` for anything else.
    pub fn from_hex(hex_digits: &str) -> Option<KeySecretHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).ok()?;
        Some(KeySecretHash(bytes))
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash as 64 lowercase hex digits, the form `secret_sha256` takes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeySecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecretHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// The ways a secret may be written; `Sha256` only for client keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretForm {
    Inline,
    Env,
    File,
    Sha256,
}

impl SecretForm {
    fn key(self) -> &'static str {
        match self {
            SecretForm::Inline => "secret",
            SecretForm::Env => "secret_env",
            SecretForm::File => "secret_file",
            SecretForm::Sha256 => "secret_sha256",
        }
    }
}

/// Picks the one secret form given in a table. Two or more is a problem at the second one;
/// none is a problem at `owner_span` (the table's id). `what` names the table in messages.
pub(crate) fn choose_form<'r>(
    forms: &[(SecretForm, Option<&'r Spanned<String>>)],
    what: &str,
    owner_span: std::ops::Range<usize>,
    problems: &mut Problems<'_>,
) -> Option<(SecretForm, &'r Spanned<String>)> {
    // The first form written in the file is taken as meant; later ones are the problem.
    let mut given: Vec<(SecretForm, &Spanned<String>)> = forms
        .iter()
        .filter_map(|&(form, value)| value.map(|value| (form, value)))
        .collect();
    given.sort_by_key(|(_, value)| value.span().start);
    let mut given = given.into_iter();
    let Some(first) = given.next() else {
        let keys: Vec<&str> = forms.iter().map(|(form, _)| form.key()).collect();
        problems.at(
            owner_span,
            format!("{what} has no secret; give one of {}", keys.join(", ")),
        );
        return None;
    };

    let mut clash = false;
    for (form, value) in given {
        clash = true;
        problems.at(
            value.span(),
            format!(
                "{what} has both {} and {}; give exactly one",
                first.0.key(),
                form.key()
            ),
        );
    }
    (!clash).then_some(first)
}

/// Reads a secret written inline, as an environment variable name or as a file path
/// (relative to `base_dir`). Problems point at the value. Not for `Sha256`.
pub(crate) fn read_secret(
    form: SecretForm,
    value: &Spanned<String>,
    base_dir: &Path,
    problems: &mut Problems<'_>,
) -> Option<String> {
    let span = value.span();
    let written = value.get_ref();
    let secret = match form {
        SecretForm::Inline => written.clone(),
        SecretForm::Env => {
            if written.is_empty() || written.contains(['=', '\0']) {
                problems.at(
                    span,
                    format!("{written:?} is not an environment variable name"),
                );
                return None;
            }
            match std::env::var(written) {
                Ok(secret) => secret,
                Err(std::env::VarError::NotPresent) => {
                    problems.at(span, format!("environment variable {written} is not set"));
                    return None;
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    problems.at(span, format!("environment variable {written} is not UTF-8"));
                    return None;
                }
            }
        }
        SecretForm::File => {
            let path = base_dir.join(written);
            match read_limited(&path, SECRET_FILE_LIMIT) {
                Ok(text) => text.trim_end_matches(['\n', '\r']).to_string(),
                Err(err) => {
                    problems.at(span, format!("cannot read {}: {err}", path.display()));
                    return None;
                }
            }
        }
        SecretForm::Sha256 => {
            problems.at(span, "internal: secret_sha256 is not a readable secret");
            return None;
        }
    };

    // The secret ends up in a header (upstream) or is compared with one (client); a control
    // character could never match and could split a header.
    if secret.is_empty() {
        problems.at(span, format!("the secret from {} is empty", form.key()));
        return None;
    }
    if secret.chars().any(|c| c.is_control()) {
        problems.at(
            span,
            format!(
                "the secret from {} contains a control character",
                form.key()
            ),
        );
        return None;
    }
    // A header value loses its surrounding whitespace on the way (RFC 9110 §5.5), so such a
    // secret could never be sent or presented as written.
    if secret.trim() != secret {
        problems.at(
            span,
            format!(
                "the secret from {} has leading or trailing whitespace",
                form.key()
            ),
        );
        return None;
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("sk-live-123");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "sk-live-123");
    }

    #[test]
    fn hash_matches_sha256_and_hex_round_trips() {
        // SHA-256 of "abc", from FIPS 180-2 appendix B.1.
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hash = KeySecretHash::of(b"abc");
        assert_eq!(hash.to_hex(), want);
        assert_eq!(KeySecretHash::from_hex(want), Some(hash));
        assert_eq!(KeySecretHash::from_hex(&want.to_uppercase()), Some(hash));
        assert_eq!(format!("{hash:?}"), "KeySecretHash(ba7816bf…)");

        for bad in [
            "",
            "abc",
            &want[1..],
            &format!("{want}00"),
            &want.replace('b', "g"),
        ] {
            assert_eq!(KeySecretHash::from_hex(bad), None, "{bad:?}");
        }
    }
}
