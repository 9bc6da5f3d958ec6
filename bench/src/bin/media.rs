//! `media`: the upload media layer against its baselines, measured in one run on this
//! machine (`cargo run --release -p commcenter-bench --bin media`).
//!
//! - SHA-256 of a 1 GiB file of pseudo-random bytes (page cache warm) through the
//!   workers' hashing paths (`digest_file`, `digest_async`), beside `sha256sum` and
//!   `openssl dgst -sha256` run as subprocesses on the same file; best of 3 each.
//!   Targets: ≥ 2 × `sha256sum`, ≥ 0.9 × `openssl`.
//! - Thumbnails to 256 px of a 12-megapixel JPEG made here (gradients, shapes and
//!   sensor-like noise, so it compresses like a photo), on one CPU: ours in a child
//!   process pinned with `taskset` (read the file, sniff, decode at reduced DCT scale,
//!   resample, encode, write), beside `vipsthumbnail -s 256 in.jpg -o out.jpg` pinned the
//!   same way with `VIPS_CONCURRENCY=1`; best of N each. Target: ≥ 1.5 × vips. vips
//!   with N images in one process (its start-up shared) is shown for reference.
//!
//! Inputs go to a temporary directory, removed at the end. A missed target is reported
//! as missed; the exit code is 0 unless the bench itself could not run.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use commcenter_workers::media::{digest, sniff, thumbnail};
use image::{Rgb, RgbImage, codecs::jpeg::JpegEncoder};

#[derive(Debug, Parser)]
#[command(
    about = "SHA-256 and thumbnail throughput of the upload media layer, beside their baselines"
)]
struct Options {
    /// Size of the hashed file, in MiB.
    #[arg(long, default_value_t = 1024)]
    hash_mib: u64,
    /// Runs of each hasher; the best is kept.
    #[arg(long, default_value_t = 3)]
    hash_runs: u32,
    /// Thumbnails made by each side; the best (fastest) one is kept, the mean shown.
    #[arg(long, default_value_t = 30)]
    thumbnails: u32,
    /// The CPU the single-threaded thumbnail runs are pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: u32,
    /// Where to write the inputs (a new temporary directory by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the inputs (the JPEG; the hashed file is always removed) in place.
    #[arg(long)]
    keep: bool,
    /// Internal: run our thumbnails on this file in this process and print the timings.
    #[arg(long, hide = true)]
    thumbnail_child: Option<PathBuf>,
}

const SIDE: u32 = 256;
const PHOTO: (u32, u32) = (4000, 3000);

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(input) = &options.thumbnail_child {
        return thumbnail_child(input, options.thumbnails);
    }
    let temp = tempfile::Builder::new()
        .prefix("commcenter-media-bench")
        .tempdir_in(options.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let dir = temp.path();
    let mut rows = Vec::new();
    let sha_ni = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains(" sha_ni"))
        .unwrap_or(false);
    println!(
        "media bench: {} CPUs, SHA extensions (sha_ni): {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if sha_ni { "yes" } else { "no" }
    );
    hashing(&options, dir, &mut rows)?;
    thumbnails(&options, dir, &mut rows)?;
    print_table(&rows);
    if options.keep {
        println!("inputs kept in {}", temp.keep().display());
    }
    Ok(())
}

/// One line of the report.
struct Row {
    section: &'static str,
    what: String,
    value: f64,
    unit: &'static str,
    note: String,
    /// (ours ÷ this, the target for that ratio), for a baseline with a target.
    versus: Option<(f64, f64)>,
}

fn row(section: &'static str, what: impl Into<String>, value: f64, unit: &'static str) -> Row {
    Row {
        section,
        what: what.into(),
        value,
        unit,
        note: String::new(),
        versus: None,
    }
}

// ---------------------------------------------------------------------------------------
// SHA-256

fn hashing(options: &Options, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let size = options.hash_mib << 20;
    let path = dir.join("hash-input.bin");
    eprintln!(
        "writing {} MiB of pseudo-random bytes to {} ...",
        options.hash_mib,
        path.display()
    );
    write_random_file(&path, size)?;
    let mb = size as f64 / 1e6;
    let section = "SHA-256";

    // Warm the page cache (and check the answer against the others below).
    let expected = digest::digest_file_blocking(&path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let file_path = best_of(options.hash_runs, || {
        let digested = runtime.block_on(digest::digest_file(&path))?;
        anyhow::ensure!(digested == expected, "digest_file disagrees with itself");
        Ok(())
    })?;
    let async_path = best_of(options.hash_runs, || {
        let digested = runtime.block_on(async {
            let file = tokio::fs::File::open(&path).await?;
            digest::digest_async(file).await
        })?;
        anyhow::ensure!(
            digested == expected,
            "digest_async disagrees with digest_file"
        );
        Ok(())
    })?;
    let ours = mb / file_path.as_secs_f64();
    let mut r = row(
        section,
        "ours: digest_file (spawn_blocking, 1 MiB double-buffered)",
        ours,
        "MB/s",
    );
    r.note = format!("{:.3} s", file_path.as_secs_f64());
    rows.push(r);
    let mut r = row(
        section,
        "ours: digest_async (tokio::fs::File)",
        mb / async_path.as_secs_f64(),
        "MB/s",
    );
    r.note = format!("{:.3} s", async_path.as_secs_f64());
    rows.push(r);

    for (name, program, args, target) in [
        ("sha256sum", "sha256sum", vec![], 2.0),
        (
            "openssl dgst -sha256",
            "openssl",
            vec!["dgst", "-sha256", "-r"],
            0.9,
        ),
    ] {
        let version = tool_version(
            program,
            if program == "openssl" {
                "version"
            } else {
                "--version"
            },
        );
        let mut output = String::new();
        let time = best_of(options.hash_runs, || {
            let out = Command::new(program)
                .args(&args)
                .arg(&path)
                .output()
                .with_context(|| format!("running {program}"))?;
            anyhow::ensure!(
                out.status.success(),
                "{program} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            output = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok(())
        });
        let time = match time {
            Ok(time) => time,
            Err(e) => {
                let mut r = row(section, name, f64::NAN, "MB/s");
                r.note = format!("not measured: {e:#}");
                rows.push(r);
                continue;
            }
        };
        if !output.contains(expected.sha256.as_str()) {
            bail!("{program} gives another digest: {output}");
        }
        let theirs = mb / time.as_secs_f64();
        let mut r = row(section, name, theirs, "MB/s");
        r.note = format!("{:.3} s; {version}", time.as_secs_f64());
        r.versus = Some((ours / theirs, target));
        rows.push(r);
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Pseudo-random bytes (xorshift), so nothing below can shortcut them.
fn write_random_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in buffer.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(buffer.len() as u64) as usize;
        file.write_all(&buffer[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Thumbnails

fn thumbnails(options: &Options, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let input = dir.join("photo.jpg");
    eprintln!(
        "making a {} × {} JPEG at {} ...",
        PHOTO.0,
        PHOTO.1,
        input.display()
    );
    let jpeg = photo_jpeg(PHOTO.0, PHOTO.1)?;
    std::fs::write(&input, &jpeg)?;
    let n = options.thumbnails;
    let section = "thumbnail";
    let cpu = options.cpu.to_string();
    let pinned = Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !pinned {
        eprintln!("taskset not found: runs are not pinned to one CPU");
    }
    let command = |program: &Path| {
        let mut command = if pinned {
            Command::new("taskset")
        } else {
            Command::new(program)
        };
        if pinned {
            command.args(["-c", &cpu]).arg(program);
        }
        command
    };

    // Ours, in a pinned child so every thread it could start shares one CPU.
    let exe = std::env::current_exe()?;
    let out = command(&exe)
        .arg("--thumbnail-child")
        .arg(&input)
        .args(["--thumbnails", &n.to_string()])
        .output()
        .context("running our thumbnail child")?;
    anyhow::ensure!(
        out.status.success(),
        "thumbnail child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let timings: Vec<f64> = text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let [best, mean, cpu_seconds] = timings[..] else {
        bail!("unexpected output from the thumbnail child: {text}");
    };
    let ours = 1.0 / best;
    let mut r = row(
        section,
        "ours: read, sniff, thumbnail() at 1/8 DCT scale, write",
        ours,
        "img/s",
    );
    r.note = format!(
        "mean {:.1} img/s; CPU time {:.0}% of wall",
        1.0 / mean,
        100.0 * cpu_seconds / (mean * f64::from(n))
    );
    rows.push(r);

    let vips = Path::new("vipsthumbnail");
    let version = tool_version("vipsthumbnail", "--version");
    let output = dir.join("vips-out.jpg");
    let mut times = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let result = command(vips)
            .env("VIPS_CONCURRENCY", "1")
            .args(["-s", &SIDE.to_string()])
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .output();
        match result {
            Ok(out) if out.status.success() => times.push(start.elapsed().as_secs_f64()),
            Ok(out) => bail!(
                "vipsthumbnail failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => {
                let mut r = row(section, "vipsthumbnail", f64::NAN, "img/s");
                r.note = format!("not measured: {e} (apt-get install libvips-tools)");
                rows.push(r);
                return Ok(());
            }
        }
    }
    let best_vips = times.iter().copied().fold(f64::INFINITY, f64::min);
    let mean_vips = times.iter().sum::<f64>() / times.len() as f64;
    let theirs = 1.0 / best_vips;
    let mut r = row(
        section,
        format!("vipsthumbnail -s {SIDE} in.jpg -o out.jpg"),
        theirs,
        "img/s",
    );
    r.note = format!(
        "{version}, one process per image, VIPS_CONCURRENCY=1; mean {:.1} img/s",
        1.0 / mean_vips
    );
    r.versus = Some((ours / theirs, 1.5));
    rows.push(r);

    // For reference: vips with its start-up shared by N images.
    let start = Instant::now();
    let out = command(vips)
        .env("VIPS_CONCURRENCY", "1")
        .args(["-s", &SIDE.to_string(), "-o"])
        .arg(dir.join("batch-%s.jpg"))
        .args(std::iter::repeat_n(&input, n as usize))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "vipsthumbnail (batch) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch = f64::from(n) / start.elapsed().as_secs_f64();
    let mut r = row(
        section,
        format!("vipsthumbnail, {n} images in one process"),
        batch,
        "img/s",
    );
    r.note = format!(
        "reference: start-up shared; ours is {:.2}× this",
        ours / batch
    );
    rows.push(r);

    println!(
        "thumbnail input: {} × {} JPEG, {:.1} MB (quality 90, 4:2:0); output {SIDE} px; pinned to CPU {}: {}",
        PHOTO.0,
        PHOTO.1,
        jpeg.len() as f64 / 1e6,
        options.cpu,
        if pinned { "yes" } else { "no" }
    );
    Ok(())
}

/// The child: `n` thumbnails of `input`, each read from disk and written back, timed.
/// Prints the best and mean seconds per thumbnail and the process's CPU seconds.
fn thumbnail_child(input: &Path, n: u32) -> anyhow::Result<()> {
    let limits = thumbnail::ImageLimits::default();
    let output = input.with_file_name("ours-out.jpg");
    let cpu_before = process_cpu_seconds();
    let mut times = Vec::new();
    for _ in 0..n.max(1) {
        let start = Instant::now();
        let bytes = std::fs::read(input)?;
        let sniffed = sniff::sniff(&bytes[..bytes.len().min(sniff::SNIFF_BYTES)], "photo.jpg")?;
        let thumb = thumbnail::thumbnail(&bytes, &sniffed, &limits, SIDE)?;
        anyhow::ensure!(
            thumb.width.max(thumb.height) == SIDE,
            "a {} × {} thumbnail",
            thumb.width,
            thumb.height
        );
        std::fs::write(&output, &thumb.bytes)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let cpu = process_cpu_seconds() - cpu_before;
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("{best} {mean} {cpu}");
    Ok(())
}

/// User + system CPU seconds of this process, all threads (Linux; 0 elsewhere).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// A photo-like picture: a sky gradient, a horizon, round shapes, and per-pixel noise
/// (about ±10 levels, like a phone sensor at ISO 400), so the JPEG has real detail.
fn photo_jpeg(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let (w, h) = (width as f32, height as f32);
    let image = RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 21) as f32 - 10.0;
        let (fx, fy) = (x as f32 / w, y as f32 / h);
        let mut rgb = if fy < 0.55 {
            [90.0 + 100.0 * fy, 140.0 + 80.0 * fy, 230.0 - 40.0 * fy] // sky
        } else {
            let ripple = 20.0 * ((fx * 60.0).sin() * (fy * 40.0).cos());
            [
                70.0 + 60.0 * fx + ripple,
                110.0 + 40.0 * fy + ripple,
                50.0 + ripple,
            ] // field
        };
        for (cx, cy, r, colour) in [
            (0.3f32, 0.4f32, 0.12f32, [240.0, 200.0, 60.0]),
            (0.7, 0.7, 0.18, [180.0, 60.0, 50.0]),
        ] {
            let d = ((fx - cx) * (fx - cx) * (w / h) * (w / h) + (fy - cy) * (fy - cy)).sqrt();
            if d < r {
                let shade = 1.0 - 0.5 * d / r;
                rgb = colour.map(|c| c * shade);
            }
        }
        Rgb(rgb.map(|c| (c + noise).clamp(0.0, 255.0) as u8))
    });
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&image)?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------
// Helpers

fn best_of(runs: u32, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        run()?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn tool_version(program: &str, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .map(|s| s.split(" (Library").next().unwrap_or(&s).trim().to_owned())
        .unwrap_or_else(|| "version unknown".into())
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<10} {:<62} {:>12}  {:>7}  {:>7}  {:<7}  note",
        "bench", "measure", "value", "ratio", "target", "verdict"
    );
    println!("{}", "-".repeat(140));
    for r in rows {
        let value = if r.value.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.1} {}", r.value, r.unit)
        };
        let (ratio, target, verdict) = match r.versus {
            Some((ratio, target)) => (
                format!("{ratio:.2}"),
                format!("≥ {target:.2}"),
                if ratio >= target { "met" } else { "MISSED" }.to_owned(),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        println!(
            "{:<10} {:<62} {:>12}  {:>7}  {:>7}  {:<7}  {}",
            r.section, r.what, value, ratio, target, verdict, r.note
        );
    }
    println!(
        "\nratio = ours ÷ that baseline (ours: the first line of each bench); MB = 10^6 bytes."
    );
}
