//! Importers for the two real datasets, both available offline: the UCI 8×8 digits (CSV, as
//! scikit-learn ships it; a copy is bundled in `data/digits.csv.gz`) and Fashion-MNIST (IDX, as
//! Debian's `dataset-fashion-mnist` installs it). Input may be gzip-compressed or plain.

use crate::dataset::Samples;
use crate::error::GpuError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The UCI digits as shipped in this crate (1797 samples, 64 features, 10 classes).
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");
/// Where Debian's `dataset-fashion-mnist` puts its IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Input files larger than this are refused (Fashion-MNIST's largest is 47 MB uncompressed).
pub const IMPORT_BYTES_MAX: u64 = 512 << 20;

fn bad(reason: impl Into<String>) -> GpuError {
    GpuError::ImportMalformed {
        reason: reason.into(),
    }
}

/// Un-gzips `bytes` when they start with the gzip magic, with a bound on the output.
pub fn maybe_gunzip(bytes: &[u8]) -> Result<Vec<u8>, GpuError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(IMPORT_BYTES_MAX + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("gzip: {e}")))?;
        if out.len() as u64 > IMPORT_BYTES_MAX {
            return Err(bad(format!(
                "more than {IMPORT_BYTES_MAX} bytes uncompressed"
            )));
        }
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, GpuError> {
    let bytes = std::fs::read(path).map_err(|e| GpuError::io(path, e))?;
    maybe_gunzip(&bytes)
}

/// Parses the digits CSV: each line 64 pixel intensities in 0..=16, then the label in 0..=9.
pub fn digits_from_csv(bytes: &[u8]) -> Result<Samples, GpuError> {
    let text = maybe_gunzip(bytes)?;
    let text = std::str::from_utf8(&text).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 65 {
            return Err(bad(format!(
                "line {}: {} fields, expected 65",
                line_no + 1,
                fields.len()
            )));
        }
        for (col, f) in fields.iter().enumerate() {
            let v: f64 = f
                .parse()
                .map_err(|_| bad(format!("line {}: field {col} = {f:?}", line_no + 1)))?;
            let max = if col == 64 { 9.0 } else { 16.0 };
            if !(0.0..=max).contains(&v) || v.fract() != 0.0 {
                return Err(bad(format!(
                    "line {}: field {col} = {v} not an integer in 0..={max}",
                    line_no + 1
                )));
            }
            if col == 64 {
                y.push(v as u8);
            } else {
                x.push((v / 16.0) as f32);
            }
        }
    }
    if y.is_empty() {
        return Err(bad("no samples"));
    }
    Samples::new(64, 10, x, y)
}

/// The bundled digits.
pub fn digits_bundled() -> Samples {
    digits_from_csv(DIGITS_CSV_GZ).expect("the bundled digits parse")
}

fn be_u32(bytes: &[u8], at: usize) -> Result<usize, GpuError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("IDX header truncated"))
}

/// Parses an IDX image file (type u8, 3 dimensions) and its IDX label file (type u8, 1 dimension).
pub fn samples_from_idx(images: &[u8], labels: &[u8], classes: usize) -> Result<Samples, GpuError> {
    let images = maybe_gunzip(images)?;
    let labels = maybe_gunzip(labels)?;
    if be_u32(&images, 0)? != 0x0803 {
        return Err(bad("images: magic is not 0x00000803 (u8, 3 dimensions)"));
    }
    if be_u32(&labels, 0)? != 0x0801 {
        return Err(bad("labels: magic is not 0x00000801 (u8, 1 dimension)"));
    }
    let (n, rows, cols) = (
        be_u32(&images, 4)?,
        be_u32(&images, 8)?,
        be_u32(&images, 12)?,
    );
    let n_labels = be_u32(&labels, 4)?;
    if n != n_labels {
        return Err(bad(format!("{n} images but {n_labels} labels")));
    }
    let features = rows
        .checked_mul(cols)
        .ok_or_else(|| bad("image size overflows"))?;
    let pixels = n
        .checked_mul(features)
        .ok_or_else(|| bad("image count overflows"))?;
    if images.len() != 16 + pixels {
        return Err(bad(format!(
            "images: {} bytes, header says {}",
            images.len(),
            16 + pixels
        )));
    }
    if labels.len() != 8 + n {
        return Err(bad(format!(
            "labels: {} bytes, header says {}",
            labels.len(),
            8 + n
        )));
    }
    let x = images[16..].iter().map(|&p| f32::from(p) / 255.0).collect();
    Samples::new(features, classes, x, labels[8..].to_vec())
}

/// Fashion-MNIST from `dir` (train 60 000, test 10 000), or `None` where it is not installed.
pub fn fashion_mnist(dir: &Path) -> Result<Option<(Samples, Samples)>, GpuError> {
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let files = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    if !files.iter().all(|f| path(f).exists()) {
        return Ok(None);
    }
    let train = samples_from_idx(
        &read_file(&path(files[0]))?,
        &read_file(&path(files[1]))?,
        10,
    )?;
    let test = samples_from_idx(
        &read_file(&path(files[2]))?,
        &read_file(&path(files[3]))?,
        10,
    )?;
    Ok(Some((train, test)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_digits_have_the_known_shape() {
        let d = digits_bundled();
        assert_eq!((d.len(), d.features, d.classes), (1797, 64, 10));
        for c in 0..10u8 {
            let count = d.y.iter().filter(|&&l| l == c).count();
            assert!((170..=190).contains(&count), "class {c}: {count}");
        }
    }

    #[test]
    fn malformed_csv_is_rejected() {
        assert!(digits_from_csv(b"1,2,3\n").is_err());
        let mut line = vec!["0"; 64];
        line.push("10");
        assert!(digits_from_csv(line.join(",").as_bytes()).is_err());
        line[64] = "3";
        line[0] = "17";
        assert!(digits_from_csv(line.join(",").as_bytes()).is_err());
        line[0] = "16";
        assert_eq!(
            digits_from_csv(line.join(",").as_bytes()).unwrap().x[0],
            1.0
        );
    }

    fn idx(n: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
        let mut images = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            images.extend_from_slice(&(d as u32).to_be_bytes());
        }
        images.extend((0..n * rows * cols).map(|i| (i % 256) as u8));
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&(n as u32).to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        (images, labels)
    }

    #[test]
    fn idx_round_trip_and_truncation() {
        let (images, labels) = idx(3, 2, 2);
        let s = samples_from_idx(&images, &labels, 10).unwrap();
        assert_eq!((s.len(), s.features), (3, 4));
        assert_eq!(s.x[5], 5.0 / 255.0);
        assert!(samples_from_idx(&images[..images.len() - 1], &labels, 10).is_err());
        assert!(samples_from_idx(&images, &labels[..9], 10).is_err());
        let mut wrong = images.clone();
        wrong[3] = 1;
        assert!(samples_from_idx(&wrong, &labels, 10).is_err());
    }
}
