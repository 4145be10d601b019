//! `cvm-keys bench`: sealing and unsealing throughput against raw ring AES-256-GCM, measured in the same run.
//!
//! - raw: `seal_in_place_separate_tag` over one 64 KiB buffer, repeated until `size` bytes (the best of a run
//!   before and a run after the stream measurements, so the ratios are conservative);
//! - seal: a generated plaintext stream (never held in memory) through [`seal::seal_stream`] into a sink;
//! - unseal: a generated *sealed* stream through [`seal::unseal_stream`] into a sink. The generator has to
//!   encrypt to produce its stream; the time it spends encrypting is measured inside it and subtracted, while
//!   the copy of its bytes into the unsealer's buffer (what reading a file would cost) is charged to unseal;
//! - optionally the same through a temporary file (seal to the file, unseal from it).
//!
//! Peak memory is the process's VmHWM from `/proc/self/status`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::keyfile::Key256;
use crate::seal::{self, Header, SealError, SealOptions, TAG_LEN};

/// Errors from the benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Sealing or unsealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A size argument could not be parsed.
    #[error("invalid size {0:?} (examples: 1GiB, 512MiB, 100MB, 65536)")]
    InvalidSize(String),
    /// The stream did not come back with the expected length.
    #[error("unsealed {got} bytes, expected {expected}")]
    LengthMismatch {
        /// Bytes produced.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// Temporary-file trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The AEAD key could not be set up.
    #[error("AES-256-GCM setup failed")]
    Crypto,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Bytes of plaintext per measurement.
    pub size: u64,
    /// Chunk size of the sealed stream.
    pub chunk_size: u32,
    /// When set, also seal to and unseal from a temporary file in this directory (once).
    pub temp_dir: Option<PathBuf>,
    /// Interleaved repetitions of the in-memory measurements (at least 1); the best of each is reported.
    pub rounds: u32,
}

/// Throughputs in GB/s (10^9 bytes per second) and the peak RSS.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Bytes per measurement.
    pub size: u64,
    /// Chunk size.
    pub chunk_size: u32,
    /// Rounds run.
    pub rounds: u32,
    /// Raw ring AES-256-GCM.
    pub raw_gbps: f64,
    /// Seal, generated stream → sink.
    pub seal_gbps: f64,
    /// Unseal, generated sealed stream → sink (generator's encryption time excluded).
    pub unseal_gbps: f64,
    /// Seal to a temporary file, if measured.
    pub file_seal_gbps: Option<f64>,
    /// Unseal from the temporary file, if measured.
    pub file_unseal_gbps: Option<f64>,
    /// Peak resident set size (VmHWM), KiB, if readable.
    pub peak_rss_kib: Option<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ratio = |x: f64| x / self.raw_gbps;
        writeln!(
            f,
            "data: {} bytes ({:.2} GiB), chunk size {} bytes, AES-256-GCM (ring), best of {} rounds",
            self.size,
            self.size as f64 / (1u64 << 30) as f64,
            self.chunk_size,
            self.rounds
        )?;
        writeln!(
            f,
            "raw AES-256-GCM, 64 KiB in place : {:6.2} GB/s",
            self.raw_gbps
        )?;
        writeln!(
            f,
            "seal   stream -> sink            : {:6.2} GB/s  ratio {:.3}",
            self.seal_gbps,
            ratio(self.seal_gbps)
        )?;
        writeln!(
            f,
            "unseal stream -> sink            : {:6.2} GB/s  ratio {:.3}",
            self.unseal_gbps,
            ratio(self.unseal_gbps)
        )?;
        if let Some(g) = self.file_seal_gbps {
            writeln!(
                f,
                "seal   stream -> temp file       : {g:6.2} GB/s  ratio {:.3}",
                ratio(g)
            )?;
        }
        if let Some(g) = self.file_unseal_gbps {
            writeln!(
                f,
                "unseal temp file -> sink         : {g:6.2} GB/s  ratio {:.3}",
                ratio(g)
            )?;
        }
        match self.peak_rss_kib {
            Some(k) => write!(
                f,
                "peak RSS (VmHWM)                 : {:.1} MiB",
                k as f64 / 1024.0
            ),
            None => write!(f, "peak RSS (VmHWM)                 : unavailable"),
        }
    }
}

/// Parses sizes such as `1GiB`, `512MiB`, `64KiB`, `100MB`, `1G`, `65536`.
pub fn parse_size(s: &str) -> Result<u64, BenchError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| BenchError::InvalidSize(s.into()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(BenchError::InvalidSize(s.into())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| BenchError::InvalidSize(s.into()))
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9
}

/// Raw ring AES-256-GCM over one 64 KiB buffer, sealed in place until `size` bytes.
fn raw_aes_gcm(key: &Key256, size: u64) -> Result<f64, BenchError> {
    let k = UnboundKey::new(&AES_256_GCM, key.as_bytes())
        .map(LessSafeKey::new)
        .map_err(|_| BenchError::Crypto)?;
    let mut buf = vec![0xA5u8; 64 * 1024];
    let mut done = 0u64;
    let mut counter = 0u64;
    let start = Instant::now();
    while done < size {
        let n = (size - done).min(buf.len() as u64) as usize;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buf[..n],
            )
            .map_err(|_| BenchError::Crypto)?;
        std::hint::black_box(tag.as_ref());
        done += n as u64;
        counter += 1;
    }
    Ok(gbps(size, start.elapsed()))
}

/// A plaintext stream of `remaining` bytes, generated on the fly.
struct PlainGenerator {
    remaining: u64,
}

impl Read for PlainGenerator {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.remaining.min(buf.len() as u64)) as usize;
        buf[..n].fill(0x5A);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A valid sealed stream of `size` plaintext bytes, generated chunk by chunk; the time spent producing
/// chunks is accumulated in `work` so that it can be subtracted from the consumer's time.
struct SealedGenerator {
    key: LessSafeKey,
    header: Header,
    aad: Vec<u8>,
    remaining: u64,
    counter: u32,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    finished: bool,
    work: Duration,
}

impl SealedGenerator {
    fn new(key: &Key256, size: u64, chunk_size: u32) -> Result<Self, BenchError> {
        let header = Header {
            version: seal::VERSION,
            algorithm: seal::ALGORITHM.to_string(),
            chunk_size,
            key_id: key.key_id(),
            nonce_prefix: [7u8; seal::NONCE_PREFIX_LEN],
        };
        let aad = header.encode()?;
        // The buffer first serves the file prefix, then each chunk in turn.
        let mut buf = vec![0u8; (chunk_size as usize + TAG_LEN).max(aad.len())];
        buf[..aad.len()].copy_from_slice(&aad);
        let len = aad.len();
        let gen_ = Self {
            key: seal::aead_key(key)?,
            header,
            aad,
            remaining: size,
            counter: 0,
            buf,
            pos: 0,
            len,
            finished: false,
            work: Duration::ZERO,
        };
        Ok(gen_)
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let cs = self.header.chunk_size as u64;
        let n = self.remaining.min(cs) as usize;
        let last = self.remaining <= cs;
        self.buf[..n].fill(0x5A);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                seal::chunk_nonce(&self.header.nonce_prefix, self.counter, last),
                Aad::from(self.aad.as_slice()),
                &mut self.buf[..n],
            )
            .map_err(|_| io::Error::other("seal failed"))?;
        self.buf[n..n + TAG_LEN].copy_from_slice(tag.as_ref());
        self.remaining -= n as u64;
        self.counter = self.counter.wrapping_add(1);
        self.pos = 0;
        self.len = n + TAG_LEN;
        self.finished = last;
        self.work += start.elapsed();
        Ok(())
    }
}

impl Read for SealedGenerator {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if self.finished {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = (self.len - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads VmHWM (peak RSS) from `/proc/self/status`, in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn check_len(got: u64, expected: u64) -> Result<(), BenchError> {
    if got == expected {
        Ok(())
    } else {
        Err(BenchError::LengthMismatch { got, expected })
    }
}

fn file_round(key: &Key256, opts: &BenchOptions, dir: &Path) -> Result<(f64, f64), BenchError> {
    let path = dir.join(format!(".cvm-keys-bench-{}.sealed", std::process::id()));
    let io_err = |source| BenchError::Io {
        path: path.clone(),
        source,
    };
    let options = SealOptions {
        chunk_size: opts.chunk_size,
    };
    let start = Instant::now();
    let res = seal::seal_to_path(
        key,
        PlainGenerator {
            remaining: opts.size,
        },
        &path,
        options,
        false,
    );
    let seal_time = start.elapsed();
    let result = res.map_err(BenchError::from).and_then(|s| {
        check_len(s.plaintext_bytes, opts.size)?;
        let f = std::fs::File::open(&path).map_err(io_err)?;
        let start = Instant::now();
        let s = seal::unseal_stream(key, io::BufReader::with_capacity(256 * 1024, f), io::sink())?;
        let unseal_time = start.elapsed();
        check_len(s.plaintext_bytes, opts.size)?;
        Ok((gbps(opts.size, seal_time), gbps(opts.size, unseal_time)))
    });
    let _ = std::fs::remove_file(&path);
    result
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let key = Key256::generate().map_err(|_| BenchError::Crypto)?;
    let options = SealOptions {
        chunk_size: opts.chunk_size,
    };
    let (mut raw, mut seal_best, mut unseal_best) = (0f64, 0f64, 0f64);
    for _ in 0..opts.rounds.max(1) {
        raw = raw.max(raw_aes_gcm(&key, opts.size)?);

        let start = Instant::now();
        let s = seal::seal_stream(
            &key,
            PlainGenerator {
                remaining: opts.size,
            },
            io::sink(),
            options,
        )?;
        let seal_time = start.elapsed();
        check_len(s.plaintext_bytes, opts.size)?;
        seal_best = seal_best.max(gbps(opts.size, seal_time));

        let mut generator = SealedGenerator::new(&key, opts.size, opts.chunk_size)?;
        let start = Instant::now();
        let s = seal::unseal_stream(&key, &mut generator, io::sink())?;
        let unseal_time = start.elapsed().saturating_sub(generator.work);
        check_len(s.plaintext_bytes, opts.size)?;
        unseal_best = unseal_best.max(gbps(opts.size, unseal_time));
    }
    let (file_seal_gbps, file_unseal_gbps) = match &opts.temp_dir {
        Some(dir) => {
            let (a, b) = file_round(&key, opts, dir)?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    Ok(BenchReport {
        size: opts.size,
        chunk_size: opts.chunk_size,
        rounds: opts.rounds.max(1),
        raw_gbps: raw,
        seal_gbps: seal_best,
        unseal_gbps: unseal_best,
        file_seal_gbps,
        file_unseal_gbps,
        peak_rss_kib: peak_rss_kib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_with_units() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn runs_a_small_benchmark_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(&BenchOptions {
            size: 300_000,
            chunk_size: 4096,
            temp_dir: Some(dir.path().to_path_buf()),
            rounds: 2,
        })
        .unwrap();
        assert!(r.file_unseal_gbps.is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
