//! Audio through the real ALSA path into ALSA's `file` plugin, so a test can inspect what was
//! played (shared/RECIPES.md).
//!
//! The plugin writes into a FIFO that a reader (a small Python script started here) holds
//! open for as long as the capture lives: it shrinks the pipe to one page before anything is
//! written (a pipe holding data cannot be shrunk, and a 64 KiB pipe would hide 340 ms of
//! audio), appends what it reads to a raw capture file, paces itself like a sound card (48 kHz
//! stereo S16LE: 192,000 bytes/s, its clock restarting after a pause), and logs
//! `time bytes peak` per 20 ms chunk: timing checks read those timestamps. Point the process
//! under test at it with [`AudioCapture::env`] (`XDG_CONFIG_HOME`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ChildGuard, TestDir, run_with_timeout};

/// Bytes per second of the capture: 48 kHz, 2 channels, 2 bytes.
pub const BYTES_PER_SECOND: f64 = 192_000.0;

/// The reader, shared with `bench/sound-latency.sh`.
const READER: &str = include_str!("../../bench/capture_reader.py");

/// One logged chunk: when the reader got it, the capture's size after it, its peak sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chunk {
    pub time: f64,
    pub end_byte: usize,
    pub peak: i32,
}

/// An ALSA default device that records into a file.
pub struct AudioCapture {
    config_home: PathBuf,
    fifo: PathBuf,
    raw: PathBuf,
    log: PathBuf,
    _reader: ChildGuard,
}

impl AudioCapture {
    /// A working default device.
    pub fn new(dir: &TestDir) -> AudioCapture {
        let capture = AudioCapture::prepare(dir);
        capture.connect_device();
        capture
    }

    /// No usable default device (an ALSA card that does not exist), until
    /// [`AudioCapture::connect_device`].
    pub fn without_device(dir: &TestDir) -> AudioCapture {
        let capture = AudioCapture::prepare(dir);
        capture.write_config("pcm.!default {\n    type hw\n    card 99\n}\n");
        capture
    }

    fn prepare(dir: &TestDir) -> AudioCapture {
        let config_home = dir.join("xdg");
        fs::create_dir_all(config_home.join("alsa")).expect("create the ALSA config dir");
        let script = dir.write("capture-reader.py", READER);
        let fifo = dir.join("played.fifo");
        let made = run_with_timeout(
            Command::new("mkfifo").arg(&fifo),
            b"",
            std::time::Duration::from_secs(5),
        );
        assert!(made.status.success(), "mkfifo failed");
        let raw = dir.join("played.raw");
        let log = dir.join("played.log");
        let mut reader = ChildGuard::spawn(
            "capture-reader",
            Command::new("python3")
                .arg(&script)
                .arg(&fifo)
                .arg(&raw)
                .arg(&log),
            dir.path(),
        );
        reader.wait_for_log("reader ready", std::time::Duration::from_secs(10));
        AudioCapture {
            config_home,
            fifo,
            raw,
            log,
            _reader: reader,
        }
    }

    /// Makes the default device work (again).
    pub fn connect_device(&self) {
        self.write_config(&format!(
            r#"pcm.!default {{
    type plug
    slave {{ pcm "capture"; format S16_LE; rate 48000; channels 2 }}
}}
pcm.capture {{
    type file
    slave.pcm "null"
    file "{fifo}"
    format "raw"
}}
"#,
            fifo = self.fifo.display(),
        ));
    }

    fn write_config(&self, text: &str) {
        let path = self.config_home.join("alsa/asoundrc");
        fs::write(&path, text).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    }

    /// Environment for the process under test.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "XDG_CONFIG_HOME".to_owned(),
            self.config_home.display().to_string(),
        )]
    }

    /// Every chunk the reader logged so far.
    pub fn chunks(&self) -> Vec<Chunk> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                Some(Chunk {
                    time: fields.next()?.parse().ok()?,
                    end_byte: fields.next()?.parse().ok()?,
                    peak: fields.next()?.parse().ok()?,
                })
            })
            .collect()
    }

    /// The left channel of the capture between two byte offsets, as samples.
    pub fn left(&self, from_byte: usize, to_byte: usize) -> Vec<i16> {
        let bytes = fs::read(&self.raw).unwrap_or_default();
        let to = to_byte.min(bytes.len());
        let from = (from_byte.min(to) / 4) * 4;
        bytes[from..to]
            .chunks_exact(4)
            .map(|frame| i16::from_le_bytes([frame[0], frame[1]]))
            .collect()
    }

    /// Chunks at or above `peak`, grouped into spans of sound separated by at least
    /// `gap_chunks` quiet ones: `(first chunk, last chunk)`.
    pub fn loud_spans(&self, peak: i32, gap_chunks: usize) -> Vec<(Chunk, Chunk)> {
        let chunks = self.chunks();
        let mut spans: Vec<(Chunk, Chunk)> = Vec::new();
        let mut quiet = usize::MAX;
        for chunk in chunks {
            if chunk.peak >= peak {
                match spans.last_mut() {
                    Some(span) if quiet < gap_chunks => span.1 = chunk,
                    _ => spans.push((chunk, chunk)),
                }
                quiet = 0;
            } else {
                quiet = quiet.saturating_add(1);
            }
        }
        spans
    }

    pub fn raw_path(&self) -> &Path {
        &self.raw
    }
}

/// Root mean square of `samples`, as a fraction of full scale.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|s| {
            let x = f64::from(*s) / 32768.0;
            x * x
        })
        .sum();
    (sum / samples.len() as f64).sqrt()
}

/// The frequency of a steady tone from its zero crossings (48 kHz samples).
pub fn tone_hz(samples: &[i16]) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let crossings = samples
        .windows(2)
        .filter(|pair| (pair[0] < 0) != (pair[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / 48_000.0)
}
