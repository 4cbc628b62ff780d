//! What the player plays: speech streamed from espeak-ng while it is still speaking, audio
//! clips decoded by rodio (WAV, MP3, OGG Vorbis, FLAC), the chime and the test tone.

use std::fs::File;
use std::io::{Read, Write};
use std::num::NonZero;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rodio::buffer::SamplesBuffer;
use rodio::source::{SineWave, Source};
use rodio::{ChannelCount, Decoder, Sample, SampleRate};
use thiserror::Error;

/// Samples per channel sent from the speech reader to the audio thread at a time.
const SPEECH_CHUNK_SAMPLES: usize = 1024;

/// Why a source could not be made.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("clip {0:?} is not in the clips directory")]
    MissingClip(String),
    #[error("clip {name:?} cannot be played: {why}")]
    Unplayable { name: String, why: String },
    #[error("the speech engine (espeak-ng) failed: {0}")]
    Speech(String),
}

/// Speech settings.
#[derive(Debug, Clone)]
pub struct Voice {
    pub voice: String,
    /// Words per minute.
    pub rate: u32,
    /// 0 to 99.
    pub pitch: u32,
}

/// A running espeak-ng whose audio streams into a [`SpeechSource`]; kill it to stop early.
pub struct Speech {
    child: Child,
}

impl Speech {
    /// Starts speaking `text` and returns the source that plays it as it is produced. The
    /// text goes in on stdin, never on the command line, so it cannot be read as an option.
    pub fn start(text: &str, voice: &Voice) -> Result<(Speech, SpeechSource), SourceError> {
        let mut child = Command::new("espeak-ng")
            .args(["-v", &voice.voice, "-s", &voice.rate.to_string()])
            .args(["-p", &voice.pitch.to_string(), "--stdout"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| SourceError::Speech(format!("cannot run espeak-ng: {error}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|error| SourceError::Speech(format!("cannot send the text: {error}")))?;
        }
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| SourceError::Speech("no output pipe".to_owned()))?;
        let mut header = [0u8; 44];
        if let Err(error) = stdout.read_exact(&mut header) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SourceError::Speech(format!(
                "no audio from espeak-ng (unknown voice {:?}?): {error}",
                voice.voice
            )));
        }
        let (channels, rate) = parse_wav_header(&header).map_err(SourceError::Speech)?;
        let (sender, receiver) = mpsc::sync_channel(64);
        std::thread::Builder::new()
            .name("speech-reader".to_owned())
            .spawn(move || read_samples(stdout, &sender))
            .map_err(|error| SourceError::Speech(format!("cannot start a reader: {error}")))?;
        let source = SpeechSource {
            channels,
            rate,
            receiver,
            chunk: Vec::new(),
            position: 0,
            done: false,
        };
        Ok((Speech { child }, source))
    }

    /// Stops the engine (when the announcement is stopped or pre-empted).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reaps the engine once it has finished.
    pub fn finish(mut self) {
        let _ = self.child.wait();
    }
}

/// Reads 16-bit samples from espeak-ng until it ends; the channel closing marks the end.
fn read_samples(mut stdout: impl Read, sender: &mpsc::SyncSender<Vec<Sample>>) {
    let mut bytes = vec![0u8; SPEECH_CHUNK_SAMPLES * 2];
    let mut carry: Option<u8> = None;
    loop {
        let read = match stdout.read(&mut bytes) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let mut data: Vec<u8> = carry.take().into_iter().collect();
        data.extend_from_slice(&bytes[..read]);
        if data.len() % 2 == 1 {
            carry = data.pop();
        }
        let samples = data
            .chunks_exact(2)
            .map(|pair| Sample::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0)
            .collect();
        if sender.send(samples).is_err() {
            return;
        }
    }
}

/// The header espeak-ng writes: RIFF/WAVE, PCM, 16 bit; sizes are unknown while streaming.
fn parse_wav_header(header: &[u8; 44]) -> Result<(ChannelCount, SampleRate), String> {
    if &header[0..4] != b"RIFF" || &header[8..12] != b"WAVE" || &header[36..40] != b"data" {
        return Err("espeak-ng did not write a WAV header".to_owned());
    }
    let format = u16::from_le_bytes([header[20], header[21]]);
    let bits = u16::from_le_bytes([header[34], header[35]]);
    if format != 1 || bits != 16 {
        return Err(format!("unexpected WAV format {format}/{bits} bit"));
    }
    let channels = NonZero::new(u16::from_le_bytes([header[22], header[23]]))
        .ok_or("WAV header with 0 channels")?;
    let rate = NonZero::new(u32::from_le_bytes([
        header[24], header[25], header[26], header[27],
    ]))
    .ok_or("WAV header with rate 0")?;
    Ok((channels, rate))
}

/// Speech samples as they arrive from the reader thread.
pub struct SpeechSource {
    channels: ChannelCount,
    rate: SampleRate,
    receiver: mpsc::Receiver<Vec<Sample>>,
    chunk: Vec<Sample>,
    position: usize,
    done: bool,
}

impl Iterator for SpeechSource {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.position < self.chunk.len() {
            self.position += 1;
            return Some(self.chunk[self.position - 1]);
        }
        if self.done {
            return None;
        }
        // This runs on the audio thread: never block. espeak-ng is many times faster than
        // real time, so an empty channel is rare and costs a moment of silence.
        match self.receiver.try_recv() {
            Ok(chunk) => {
                self.chunk = chunk;
                self.position = 0;
                self.next().or(Some(0.0))
            }
            Err(mpsc::TryRecvError::Empty) => Some(0.0),
            Err(mpsc::TryRecvError::Disconnected) => {
                self.done = true;
                None
            }
        }
    }
}

impl Source for SpeechSource {
    fn current_span_len(&self) -> Option<usize> {
        None
    }

    fn channels(&self) -> ChannelCount {
        self.channels
    }

    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn total_duration(&self) -> Option<Duration> {
        None
    }
}

/// Decodes a clip from `dir`.
pub fn clip(dir: &Path, name: &str) -> Result<Decoder<std::io::BufReader<File>>, SourceError> {
    let path = dir.join(name);
    let file = File::open(&path).map_err(|_| SourceError::MissingClip(name.to_owned()))?;
    Decoder::try_from(file).map_err(|error| SourceError::Unplayable {
        name: name.to_owned(),
        why: error.to_string(),
    })
}

/// The chime before an announcement: two soft tones, high then low, 0.8 s in all.
pub fn chime() -> SamplesBuffer {
    const RATE: u32 = 48_000;
    let tone = |hz: f32, seconds: f32| -> Vec<Sample> {
        let samples = (RATE as f32 * seconds) as usize;
        (0..samples)
            .map(|n| {
                let t = n as f32 / RATE as f32;
                // A quick attack and an exponential decay, like a struck bell.
                let envelope = (t * 200.0).min(1.0) * (-t * 4.0).exp();
                0.5 * envelope * (std::f32::consts::TAU * hz * t).sin()
            })
            .collect()
    };
    let mut samples = tone(880.0, 0.4);
    samples.extend(tone(660.0, 0.4));
    SamplesBuffer::new(
        NonZero::<u16>::MIN,
        NonZero::new(RATE).unwrap_or(NonZero::<u32>::MIN),
        samples,
    )
}

/// The test tone: a sine at `hz` for `seconds`.
pub fn tone(hz: f64, seconds: f64) -> impl Source + Send {
    SineWave::new(hz as f32)
        .take_duration(Duration::from_secs_f64(seconds))
        .amplify(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn espeak_headers_are_read() {
        let mut header = [0u8; 44];
        header[0..4].copy_from_slice(b"RIFF");
        header[8..12].copy_from_slice(b"WAVE");
        header[20..22].copy_from_slice(&1u16.to_le_bytes());
        header[22..24].copy_from_slice(&1u16.to_le_bytes());
        header[24..28].copy_from_slice(&22050u32.to_le_bytes());
        header[34..36].copy_from_slice(&16u16.to_le_bytes());
        header[36..40].copy_from_slice(b"data");
        let (channels, rate) = parse_wav_header(&header).unwrap();
        assert_eq!((channels.get(), rate.get()), (1, 22050));
        header[34] = 8;
        assert!(parse_wav_header(&header).is_err());
    }

    #[test]
    fn the_chime_and_the_tone_have_their_length() {
        let chime = chime();
        assert_eq!(chime.total_duration(), Some(Duration::from_millis(800)));
        let samples = tone(1000.0, 0.5).count();
        assert_eq!(samples, 48_000 / 2);
    }
}
