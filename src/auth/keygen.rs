//! `switchyard key hash` and `switchyard key new`: the line to paste into
//! `auth.keys`, so that nobody hand-rolls a SHA-256 (and hashes a trailing
//! newline with it).

use rand::RngCore;

/// Bytes of randomness in a new key: 256 bits, beyond any guessing.
const NEW_KEY_BYTES: usize = 32;

/// What a new key starts with, so that secret scanners and people can tell
/// one when they see it.
pub const KEY_PREFIX: &str = "sk-sy-";

/// The `sha256:` line for `key`: what is read from stdin, less one
/// trailing newline (what `echo` and a here-string add).
pub fn hash_line(key: &str) -> Result<String, String> {
    let key = key
        .strip_suffix('\n')
        .map(|k| k.strip_suffix('\r').unwrap_or(k))
        .unwrap_or(key);
    if key.trim().is_empty() {
        return Err("no key on standard input".into());
    }
    if key.trim() != key {
        return Err("the key starts or ends with white space, which no client would send".into());
    }
    if key.chars().any(|c| c.is_control()) {
        return Err("the key has control characters (is it more than one line?)".into());
    }
    Ok(format!(
        "sha256: {}",
        hex::encode(super::key::digest(key.as_bytes()))
    ))
}

/// A fresh random key.
pub fn new_key() -> String {
    let mut bytes = [0u8; NEW_KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_hashes_the_key_without_its_newline() {
        let line = hash_line("abc\n").unwrap();
        assert_eq!(
            line,
            "sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_line("abc").unwrap(), line);
        assert!(hash_line("\n").is_err());
        assert!(hash_line("a\nb\n").is_err());
        assert!(hash_line(" abc").is_err());
    }

    #[test]
    fn new_keys_differ_and_hash() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert!(hash_line(&a).is_ok());
    }
}
