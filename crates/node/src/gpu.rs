//! `trainmesh gpu check`: what this machine's GPU can prove, not what it declares. Opens the best
//! adapter, runs the conformance suite (the device must reproduce the CPU executor's pinned
//! checkpoint hashes byte for byte), times the device's matmul kernel (the GFLOP/s a trainer
//! registers with) and training on the device against the CPU executor, and says which path
//! training takes here and why. The last line is one JSON object.

use trainmesh_gpu::conformance::{self, ConformanceReport};
use trainmesh_gpu::device::GpuDevice;

#[derive(clap::Subcommand, Debug)]
pub enum GpuCommand {
    /// Adapter, conformance and measured throughput; which path would train here.
    Check,
}

pub fn run(command: GpuCommand) -> anyhow::Result<()> {
    match command {
        GpuCommand::Check => check(),
    }
}

/// The size of the timed matmul (n×n by n×n).
const TIMED_N: usize = 256;
/// Training steps timed on each path.
const TIMED_STEPS: u64 = 20;

fn check() -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dev = match GpuDevice::open_best() {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("no usable GPU adapter: {e}");
            let (cpu, _) = conformance::training_throughput(None, TIMED_STEPS, threads)?;
            println!("device: none ({reason}); training runs on the CPU executor");
            println!("CPU training: {cpu:.0} samples/s ({threads} threads)");
            let json = serde_json::json!({
                "adapter": null,
                "conformance": null,
                "eligible": false,
                "device_gflops": null,
                "device_train_samples_per_s": null,
                "cpu_train_samples_per_s": cpu,
                "train_on": "cpu",
                "reason": reason,
            });
            println!("{json}");
            return Ok(());
        }
    };
    let a = &dev.adapter;
    println!(
        "device: {} ({}, {} via {}, driver {})",
        a.name, a.device_type, a.vendor, a.backend, a.driver
    );
    let report: ConformanceReport = conformance::check(&dev)?;
    println!(
        "conformance: {} (digest {}, device fma {}, kernels' fma: {:?})",
        if report.passed { "passed" } else { "FAILED" },
        report.digest,
        if report.hardware_fma {
            "exact"
        } else {
            "not exact"
        },
        report.fma_path
    );
    for c in &report.cases {
        let mark = if c.got == c.expected { "ok" } else { "DIFFERS" };
        println!("  {:<24} {mark}  {}", c.name, c.got);
    }
    let gflops = dev.matmul_gflops(TIMED_N, 3)?;
    println!("device matmul: {gflops:.2} GFLOP/s ({TIMED_N}³)");
    let (cpu, device) = conformance::training_throughput(Some(&dev), TIMED_STEPS, threads)?;
    let device = device.unwrap_or(0.0);
    println!(
        "training (digits MLP 64-64-10, batch 32): device {device:.0} samples/s, CPU executor {cpu:.0} samples/s ({threads} threads)"
    );
    let (train_on, reason) = if !report.passed {
        (
            "cpu",
            report
                .reason
                .clone()
                .unwrap_or_else(|| "conformance failed".into()),
        )
    } else if device < cpu {
        (
            "cpu",
            format!(
                "the device conforms but trains slower than this CPU ({device:.0} < {cpu:.0} samples/s)"
            ),
        )
    } else {
        (
            "device",
            format!("the device conforms and trains faster ({device:.0} ≥ {cpu:.0} samples/s)"),
        )
    };
    println!("training here runs on the {train_on}: {reason}");
    let json = serde_json::json!({
        "adapter": a.name,
        "backend": a.backend,
        "device_type": a.device_type,
        "conformance": report,
        "eligible": report.passed,
        "device_gflops": gflops,
        "device_train_samples_per_s": device,
        "cpu_train_samples_per_s": cpu,
        "train_on": train_on,
        "reason": reason,
    });
    println!("{json}");
    Ok(())
}

/// Where a trainer trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// The device when it passes conformance and trains faster than this CPU (measured).
    #[default]
    Auto,
    /// The device whenever it passes conformance.
    Device,
    /// The CPU executor.
    Cpu,
}

/// The device a trainer should train on, decided by conformance and, for `auto`, by measured
/// throughput; `None` (the CPU executor) with the reason logged otherwise.
pub fn train_device(choice: TrainOn) -> Option<std::sync::Arc<GpuDevice>> {
    if choice == TrainOn::Cpu {
        return None;
    }
    let dev = match GpuDevice::open_best() {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(error = %e, "no GPU adapter: training on the CPU executor");
            return None;
        }
    };
    match conformance::check(&dev) {
        Ok(r) if r.passed => {}
        Ok(r) => {
            tracing::warn!(adapter = %dev.adapter.name, reason = ?r.reason, "the device failed conformance: training on the CPU executor");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "conformance could not run: training on the CPU executor");
            return None;
        }
    }
    if choice == TrainOn::Auto {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        match conformance::training_throughput(Some(&dev), TIMED_STEPS, threads) {
            Ok((cpu, Some(device))) if device >= cpu => {}
            Ok((cpu, device)) => {
                tracing::warn!(
                    adapter = %dev.adapter.name,
                    device_samples_per_s = device.unwrap_or(0.0),
                    cpu_samples_per_s = cpu,
                    "the device conforms but trains slower than this CPU: training on the CPU executor"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "throughput could not be measured: training on the CPU executor");
                return None;
            }
        }
    }
    tracing::info!(adapter = %dev.adapter.name, "training on the device (conformance passed)");
    Some(std::sync::Arc::new(dev))
}
