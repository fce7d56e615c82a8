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
        "conformance: {} (digest {}, device fma {})",
        if report.passed { "passed" } else { "FAILED" },
        report.digest,
        if report.hardware_fma {
            "exact"
        } else {
            "not exact: integer fma in the kernels"
        }
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
