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
    // Created owner-only (never readable for a moment under the umask), and restricted again
    // when it existed before.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    use std::io::Write;
    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
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

    /// A key file is owner-only from its creation, whatever the umask, and one that existed
    /// with wider permissions is restricted when written again.
    #[cfg(unix)]
    #[test]
    fn key_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write(&p, &generate()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&p, &generate()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
