//! `trainmesh dataset prepare --text`: a corpus becomes token shards and a manifest that names
//! its tokenizer, with the byte tokenizer and with a BPE tokenizer file.

use std::process::Command;
use trainmesh_gpu::hash::Hash32;
use trainmesh_gpu::tokens::decode_token_shard;

fn prepare(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
        .args(["dataset", "prepare"])
        .args(args)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Every token of a prepared directory, train then held-out, checked against the shard names.
fn tokens_of(dir: &std::path::Path) -> (serde_json::Value, Vec<u32>, Vec<u32>) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let read = |split: &str| -> Vec<u32> {
        m[split]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| {
                let h = h.as_str().unwrap();
                let bytes = std::fs::read(dir.join(format!("{h}.shard"))).unwrap();
                let hash = Hash32(hex::decode(h).unwrap().try_into().unwrap());
                decode_token_shard(&bytes, &hash).unwrap().ids
            })
            .collect()
    };
    let (train, heldout) = (read("train"), read("heldout"));
    (m, train, heldout)
}

#[test]
fn text_is_tokenized_by_bytes_or_by_a_bpe_file() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text = "abab ba ".repeat(500);
    std::fs::write(&corpus, &text).unwrap();

    // Bytes: vocabulary 256, every byte one id, a held-out share of whole shards.
    let out = dir.path().join("bytes");
    let r = prepare(&[
        "--text",
        corpus.to_str().unwrap(),
        "--tokenizer",
        "bytes",
        "--tokens-per-shard",
        "400",
        "--heldout-fraction",
        "0.1",
        "--name",
        "abab",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["tokenizer"], "bytes");
    let (m, train, heldout) = tokens_of(&out);
    assert_eq!(
        (m["features"].as_u64(), m["classes"].as_u64()),
        (Some(0), Some(256))
    );
    // The corpus plus the newline that ends it, split into 11 shards of which 1 is held out.
    assert_eq!(train.len() + heldout.len(), text.len() + 1);
    assert_eq!(heldout.len(), 400);
    assert!(train.iter().all(|&t| b"ab \n".contains(&(t as u8))));

    // A BPE tokenizer file (the Hugging Face format): `a b` merges into `ab`.
    let bpe = dir.path().join("tokenizer.json");
    std::fs::write(
        &bpe,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,
            "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,
              "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,
              "vocab":{"a":0,"b":1," ":2,"\n":3,"ab":4},"merges":["a b"]}}"#,
    )
    .unwrap();
    let out = dir.path().join("bpe");
    let r = prepare(&[
        "--text",
        corpus.to_str().unwrap(),
        "--tokenizer",
        &format!("bpe:{}", bpe.display()),
        "--tokens-per-shard",
        "500",
        "--name",
        "abab-bpe",
        "--out",
        out.to_str().unwrap(),
    ]);
    let named = format!("bpe:{}", Hash32::of(&std::fs::read(&bpe).unwrap()).to_hex());
    assert_eq!(r["tokenizer"], named.as_str());
    let (m, train, heldout) = tokens_of(&out);
    assert_eq!(m["classes"], 5);
    // "abab ba " is 6 tokens: ab ab ␠ b a ␠ (a merge never crosses the space).
    assert_eq!(train.len() + heldout.len(), 500 * 6 + 1);
    let mut all = train.clone();
    all.extend(&heldout);
    assert!(all.contains(&4) && all.iter().all(|&t| t < 5));

    // A tokenizer that is neither, or a file that is not a tokenizer: a clear error.
    for bad in ["words", &format!("bpe:{}", corpus.display())] {
        let out = Command::new(env!("CARGO_BIN_EXE_trainmesh"))
            .args(["dataset", "prepare", "--text", corpus.to_str().unwrap()])
            .args(["--tokenizer", bad, "--name", "x", "--out"])
            .arg(dir.path().join("bad"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("tokenizer"), "{bad}: {err}");
    }
}
