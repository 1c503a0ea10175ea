//! Passwords and bearer tokens: how they are made, checked and stored.
//!
//! Passwords are hashed with Argon2id at the `argon2` crate's defaults (19 MiB, 2 passes, 1
//! lane: the OWASP baseline) into a PHC string, which carries its own salt and parameters.
//! Tokens are 32 bytes from the operating system's generator, shown once as hex with a
//! prefix naming their kind, and stored only as their BLAKE2b-256 hash: a token is as strong
//! as a key, so a fast hash is enough and every request stays cheap.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use blake2::{Blake2b256, Digest};

use crate::store::TokenHash;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted, in bytes: enough for any passphrase, short enough that hashing
/// it costs the same as any other.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// What kind of token a string claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Device,
    Session,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Device => "hod_",
            TokenKind::Session => "hos_",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("không tạo được số ngẫu nhiên / the system's random number generator failed: {0}")]
    Random(String),
    #[error("không băm được mật khẩu / hashing the password failed: {0}")]
    Hash(String),
}

/// Checks a new password against the rules; the message says what to change.
pub fn check_new_password(password: &str, username: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "mật khẩu phải có ít nhất {MIN_PASSWORD_CHARS} ký tự / the password needs at least {MIN_PASSWORD_CHARS} characters: a short sentence is easy to remember and hard to guess"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "mật khẩu dài quá {MAX_PASSWORD_BYTES} byte / the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.trim().to_lowercase() == username.to_lowercase() {
        return Err(
            "mật khẩu không được trùng tên đăng nhập / the password must not be the user name"
                .to_string(),
        );
    }
    Ok(())
}

/// Hashes a password into an Argon2id PHC string with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| SecretError::Hash(error.to_string()))
}

/// Does `password` match the stored PHC string? A damaged hash matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), phc)
            .is_ok()
}

/// Spends the time a real verification takes, so that an unknown user name cannot be told
/// from a wrong password by the time the answer takes.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash_password("không ai có mật khẩu này").ok()) {
        let _ = verify_password(password, phc);
    }
}

/// A new token of `kind`, and its hash.
pub fn new_token(kind: TokenKind) -> Result<(String, TokenHash), SecretError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| SecretError::Random(error.to_string()))?;
    let mut token = String::with_capacity(4 + 64);
    token.push_str(kind.prefix());
    for byte in bytes {
        token.push_str(&format!("{byte:02x}"));
    }
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// The kind a token claims by its prefix, if it has the shape of one of ours.
pub fn token_kind(token: &str) -> Option<TokenKind> {
    [TokenKind::Device, TokenKind::Session]
        .into_iter()
        .find(|kind| {
            token
                .strip_prefix(kind.prefix())
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        })
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Blake2b256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("một câu dài dễ nhớ").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("một câu dài dễ nhớ", &phc));
        assert!(!verify_password("một câu dài dễ nhớ!", &phc));
        assert!(!verify_password("x", "not a phc string"));
        let again = hash_password("một câu dài dễ nhớ").expect("hash");
        assert_ne!(phc, again, "a fresh salt every time");
    }

    #[test]
    fn new_passwords_follow_the_rules() {
        assert!(check_new_password("ngắn", "lan").is_err());
        assert!(check_new_password("nguyen.lan", "Nguyen.Lan").is_err());
        assert!(check_new_password(&"x".repeat(MAX_PASSWORD_BYTES + 1), "lan").is_err());
        assert!(check_new_password("đồng lúa chín vàng", "lan").is_ok());
    }

    #[test]
    fn tokens_are_random_typed_and_stored_hashed() {
        let (device, hash) = new_token(TokenKind::Device).expect("token");
        let (other, _) = new_token(TokenKind::Device).expect("token");
        assert_ne!(device, other);
        assert_eq!(token_kind(&device), Some(TokenKind::Device));
        assert_eq!(hash_token(&device), hash);
        let (session, _) = new_token(TokenKind::Session).expect("token");
        assert_eq!(token_kind(&session), Some(TokenKind::Session));
        assert_eq!(token_kind("hod_1234"), None);
        assert_eq!(token_kind(&device.replace("hod_", "hox_")), None);
        assert_eq!(
            token_kind(&format!("{}g", &device[..device.len() - 1])),
            None
        );
    }
}
