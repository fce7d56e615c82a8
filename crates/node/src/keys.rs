//! Key files: one ed25519 secret per file, as 64 hex characters (and a newline).

use std::path::Path;

use anyhow::{bail, Context};
use rand::RngCore;

/// A fresh secret from the OS.
pub fn generate() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// A secret derived from a label (devnets and tests only: anyone can derive it).
pub fn derived(label: &str) -> [u8; 32] {
    *blake3::hash(format!("trainmesh/devnet-key/{label}").as_bytes()).as_bytes()
}

pub fn write(path: &Path, secret: &[u8; 32]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, format!("{}\n", hex::encode(secret)))
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

pub fn read(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(text.trim()).with_context(|| format!("key file {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text).context("not hex")?;
    if bytes.len() != 32 {
        bail!("a key is 32 bytes, found {}", bytes.len());
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&bytes);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_reject_junk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let s = generate();
        write(&p, &s).unwrap();
        assert_eq!(read(&p).unwrap(), s);
        assert!(parse("abc").is_err());
        assert!(parse(&"00".repeat(31)).is_err());
        assert!(read(&dir.path().join("missing")).is_err());
        assert_ne!(derived("a"), derived("b"));
    }
}
