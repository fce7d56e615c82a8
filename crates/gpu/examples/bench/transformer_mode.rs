//! `--model transformer`: a byte-level transformer language model on Debian's `fortunes` corpus,
//! trained on the deterministic CPU executor and by PyTorch (CPU) from the same initial weights,
//! on the same batches in the same order, with the same AdamW schedule and the same number of
//! steps (`bench/pytorch_transformer.py` through `bench/pytorch_baseline.sh --transformer`).
//!
//! Prints the held-out loss of both (and their ratio), then training tokens/s of both at 1 and
//! all threads, interleaved (ours 1t, PyTorch 1t, ours nt, PyTorch nt, BENCH_ROUNDS times); the
//! last line is one JSON object with `train_tokens_per_s`, `pytorch_tokens_per_s`,
//! `ratio_vs_pytorch` (per thread count, medians), `heldout_loss`, `pytorch_heldout_loss`.
//!
//! Environment: BENCH_LM_STEPS (default 300), BENCH_LM_LAYERS (4), BENCH_LM_D_MODEL (128),
//! BENCH_LM_HEADS (4), BENCH_LM_CONTEXT (128), BENCH_LM_BATCH (16), BENCH_ROUNDS (2),
//! BENCH_THREADS (all cores), BENCH_PYTORCH (`0` skips PyTorch, `install` lets it install).

use super::{env_usize, median};
use std::collections::HashMap;
use std::time::Instant;
use trainmesh_gpu::dataset::ShardStore;
use trainmesh_gpu::optim::{DataOrder, HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::tokens::{fortunes_corpus, shard_tokens, Tokens, BYTES_TOKENIZER, FORTUNES_DIR};
use trainmesh_gpu::train::{evaluate_tokens, initial_state, Trainer};

fn write_u16(path: &std::path::Path, ids: &[u32]) {
    let bytes: Vec<u8> = ids.iter().flat_map(|&t| (t as u16).to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write token file");
}

/// Runs `pytorch_baseline.sh --transformer --dir DIR ARGS…`; its last line parsed.
fn pytorch(dir: &std::path::Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec![
        "--transformer".to_string(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    super::pytorch_script(&all)
}

pub fn run() {
    let steps = env_usize("BENCH_LM_STEPS", 300) as u64;
    let (layers, d_model, heads, context, batch) = (
        env_usize("BENCH_LM_LAYERS", 4),
        env_usize("BENCH_LM_D_MODEL", 128),
        env_usize("BENCH_LM_HEADS", 4),
        env_usize("BENCH_LM_CONTEXT", 128),
        env_usize("BENCH_LM_BATCH", 16),
    );
    let rounds = env_usize("BENCH_ROUNDS", 2);
    let threads = env_usize(
        "BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let Some(text) = fortunes_corpus(std::path::Path::new(FORTUNES_DIR)).expect("read corpus")
    else {
        eprintln!("{FORTUNES_DIR} is missing: install Debian's fortunes package");
        std::process::exit(2);
    };
    let mut shards = ShardStore::new();
    let manifest = shard_tokens(
        "fortunes",
        BYTES_TOKENIZER,
        &Tokens::from_bytes(&text),
        64 << 10,
        0.05,
        3,
        &mut shards,
    )
    .expect("shard the corpus");
    let train = shards.load_tokens(&manifest.train).expect("train split");
    let heldout = shards
        .load_tokens(&manifest.heldout)
        .expect("held-out split");
    let spec = format!(
        r#"{{"kind":"transformer","layers":{layers},"d_model":{d_model},"heads":{heads},"context":{context},"vocab":256}}"#
    );
    let model = ModelSpec::from_json(spec.as_bytes()).expect("bench spec");
    let optimizer = Optimizer::AdamW {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        warmup_steps: 20.min(steps),
        decay_steps: steps,
        min_lr: 3e-4,
        clip_norm: 1.0,
    };
    let hyper = HyperParams {
        optimizer,
        batch,
        seed: 5,
    };
    println!("== trainmesh-gpu bench: transformer ==");
    println!(
        "model {spec} ({} parameters); corpus {} bytes of {FORTUNES_DIR} ({} train, {} held-out tokens); batch {batch} × {context} tokens, {steps} steps, AdamW; threads 1 and {threads}",
        model.param_count(),
        text.len(),
        train.len(),
        heldout.len()
    );

    // The exchange directory the PyTorch reference reads.
    let dir = std::env::temp_dir().join(format!("trainmesh-lm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("exchange dir");
    let start = initial_state(&model, &hyper);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = start
        .params
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("param.{i:03}"),
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = raw.iter().map(|(n, s, b)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("view"),
        )
    });
    std::fs::write(
        dir.join("init.safetensors"),
        safetensors::serialize(views, None::<HashMap<String, String>>).expect("serialize"),
    )
    .expect("write init");
    write_u16(&dir.join("train.u16"), &train.ids);
    write_u16(&dir.join("heldout.u16"), &heldout.ids);
    let mut order = DataOrder::new(hyper.seed, train.windows(context), batch).expect("order");
    let batches: Vec<u8> = (0..steps)
        .flat_map(|s| order.batch(s).to_vec())
        .flat_map(|i| (i as u32).to_le_bytes())
        .collect();
    std::fs::write(dir.join("batches.u32"), batches).expect("write batches");
    let config = serde_json::json!({
        "layers": layers, "d_model": d_model, "heads": heads, "context": context, "tied": true,
        "batch": batch, "steps": steps,
        // The optimizer as the engine serializes it (`kind` and every constant by name).
        "optimizer": optimizer,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");

    // 1. Quality: every step on both, then the held-out loss.
    let mut state = start.clone();
    let t = Instant::now();
    Trainer::new(&model, hyper, &train)
        .expect("trainer")
        .with_threads(threads)
        .run(&mut state, steps);
    let ours_s = t.elapsed().as_secs_f64();
    let initial = evaluate_tokens(&model, &start.params, &heldout, threads).expect("eval");
    let ours = evaluate_tokens(&model, &state.params, &heldout, threads).expect("eval");
    println!(
        "trainmesh: held-out loss {:.4} → {:.4} nats/token ({:.3} bits/token, next-byte accuracy {:.3}) in {ours_s:.1} s",
        initial.loss,
        ours.loss,
        ours.loss / std::f64::consts::LN_2,
        ours.accuracy
    );
    let torch_quality = pytorch(&dir, &["--quality", "--threads", &threads.to_string()]);
    let torch_loss = match &torch_quality {
        Ok(v) => {
            let l = v["heldout_loss"].as_f64();
            println!(
                "pytorch {}: held-out loss {:.4} → {:.4}",
                v["torch"],
                v["initial_heldout_loss"].as_f64().unwrap_or(f64::NAN),
                l.unwrap_or(f64::NAN)
            );
            l
        }
        Err(e) => {
            println!("pytorch: skipped ({e})");
            None
        }
    };

    // 2. Speed, interleaved.
    let timed = env_usize("BENCH_LM_TIMED_STEPS", 20) as u64;
    let warm = 3u64;
    let mut counts = vec![1usize];
    if threads > 1 {
        counts.push(threads);
    }
    let mut ours_tps: HashMap<usize, Vec<f64>> = HashMap::new();
    let mut torch_tps: HashMap<usize, Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        for &n in &counts {
            let mut s = start.clone();
            let mut trainer = Trainer::new(&model, hyper, &train)
                .expect("trainer")
                .with_threads(n);
            trainer.run(&mut s, warm);
            let t = Instant::now();
            trainer.run(&mut s, timed);
            let tps = (timed as usize * batch * context) as f64 / t.elapsed().as_secs_f64();
            ours_tps.entry(n).or_default().push(tps);
            let theirs = pytorch(
                &dir,
                &[
                    "--speed",
                    "--threads",
                    &n.to_string(),
                    "--warmup",
                    &warm.to_string(),
                    "--steps",
                    &timed.to_string(),
                ],
            )
            .ok()
            .and_then(|v| v["train_tokens_per_s"].as_f64());
            if let Some(t) = theirs {
                torch_tps.entry(n).or_default().push(t);
            }
            println!(
                "round {round}, {n} thread(s): trainmesh {tps:.0} tokens/s, pytorch {}",
                theirs.map_or("-".into(), |t| format!("{t:.0} tokens/s"))
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let per = |m: &HashMap<usize, Vec<f64>>| -> serde_json::Value {
        counts
            .iter()
            .filter_map(|n| {
                m.get(n)
                    .map(|v| (n.to_string(), serde_json::json!(median(v))))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let ratio: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .filter_map(|n| {
            let (a, b) = (ours_tps.get(n)?, torch_tps.get(n)?);
            Some((n.to_string(), serde_json::json!(median(a) / median(b))))
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "model": "transformer",
            "parameters": model.param_count(),
            "steps": steps,
            "batch_tokens": batch * context,
            "heldout_loss": ours.loss,
            "heldout_bits_per_token": ours.loss / std::f64::consts::LN_2,
            "pytorch_heldout_loss": torch_loss,
            "heldout_loss_ratio_vs_pytorch": torch_loss.map(|t| ours.loss / t),
            "train_tokens_per_s": per(&ours_tps),
            "pytorch_tokens_per_s": per(&torch_tps),
            "ratio_vs_pytorch": ratio,
        })
    );
}
