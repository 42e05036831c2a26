//! A SETI@home-style search for narrow-band signals in a radio recording.
//!
//! The recording is synthetic and generated inside the task, so a job input
//! of a few lines stands for millions of samples: Gaussian noise from a
//! counter-based generator (any sample can be computed alone, so a unit
//! regenerates just its chunk) plus the tones the job injects. A job input:
//!
//! ```text
//! seed 42
//! sample_rate 8192      # samples per second
//! seconds 120
//! chunk 4096            # samples per unit; units overlap by half a chunk
//! threshold 20          # candidate when bin power / mean noise power exceeds it
//! signal 1000.0 0.3 10 50    # frequency Hz, amplitude, start s, end s
//! ```
//!
//! `split` emits one unit per chunk (the parameters and the chunk's first
//! sample). `run` windows the chunk (Hann), takes its FFT, estimates the
//! noise floor from the median bin power, and reports every bin that stands
//! above the threshold: frequency (refined between bins), time, SNR. `reduce`
//! merges candidates of neighbouring frequencies into signals and ranks
//! them by strength.

use std::f64::consts::PI;
use std::fmt::Write as _;

/// The search parameters and the injected signals.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub seed: u64,
    pub sample_rate: f64,
    pub seconds: f64,
    pub chunk: usize,
    pub threshold: f64,
    pub signals: Vec<Signal>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub freq: f64,
    pub amplitude: f64,
    pub start: f64,
    pub end: f64,
}

impl Params {
    pub fn parse(text: &str) -> Result<Params, String> {
        let mut p = Params {
            seed: 1,
            sample_rate: 8192.0,
            seconds: 60.0,
            chunk: 4096,
            threshold: 20.0,
            signals: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or("");
            let values: Vec<f64> = words
                .map(|w| {
                    w.parse::<f64>()
                        .map_err(|e| format!("line {}: {w:?}: {e}", n + 1))
                })
                .collect::<Result<_, _>>()?;
            let one = || -> Result<f64, String> {
                match values.as_slice() {
                    [v] => Ok(*v),
                    _ => Err(format!("line {}: `{key}` takes one number", n + 1)),
                }
            };
            match key {
                "seed" => p.seed = one()? as u64,
                "sample_rate" => p.sample_rate = one()?,
                "seconds" => p.seconds = one()?,
                "chunk" => p.chunk = one()? as usize,
                "threshold" => p.threshold = one()?,
                "signal" => match values.as_slice() {
                    [freq, amplitude, start, end] => p.signals.push(Signal {
                        freq: *freq,
                        amplitude: *amplitude,
                        start: *start,
                        end: *end,
                    }),
                    _ => {
                        return Err(format!(
                            "line {}: `signal` takes: frequency amplitude start end",
                            n + 1
                        ));
                    }
                },
                other => return Err(format!("line {}: unknown key {other:?}", n + 1)),
            }
        }
        if !p.chunk.is_power_of_two() || p.chunk < 64 {
            return Err(format!(
                "chunk must be a power of two of at least 64, got {}",
                p.chunk
            ));
        }
        if p.sample_rate <= 0.0 || p.seconds <= 0.0 {
            return Err("sample_rate and seconds must be positive".into());
        }
        Ok(p)
    }

    fn to_text(&self) -> String {
        let mut s = format!(
            "seed {}\nsample_rate {}\nseconds {}\nchunk {}\nthreshold {}\n",
            self.seed, self.sample_rate, self.seconds, self.chunk, self.threshold
        );
        for sig in &self.signals {
            let _ = writeln!(
                s,
                "signal {} {} {} {}",
                sig.freq, sig.amplitude, sig.start, sig.end
            );
        }
        s
    }

    fn total_samples(&self) -> u64 {
        (self.seconds * self.sample_rate) as u64
    }

    /// Sample `i` of the recording: unit-variance noise plus the signals.
    pub fn sample(&self, i: u64) -> f64 {
        let t = i as f64 / self.sample_rate;
        let mut x = gaussian(self.seed, i);
        for s in &self.signals {
            if t >= s.start && t < s.end {
                x += s.amplitude * (2.0 * PI * s.freq * t).sin();
            }
        }
        x
    }
}

/// A standard normal deviate that depends only on (seed, i).
fn gaussian(seed: u64, i: u64) -> f64 {
    let a = splitmix(seed ^ splitmix(i.wrapping_mul(2)));
    let b = splitmix(seed ^ splitmix(i.wrapping_mul(2) + 1));
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// In-place iterative radix-2 FFT of (re, im).
pub fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let angle = -2.0 * PI / len as f64;
        let (w_im, w_re) = angle.sin_cos();
        for start in (0..n).step_by(len) {
            let (mut c_re, mut c_im) = (1.0, 0.0);
            for k in 0..len / 2 {
                let (a, b) = (start + k, start + k + len / 2);
                let t_re = re[b] * c_re - im[b] * c_im;
                let t_im = re[b] * c_im + im[b] * c_re;
                re[b] = re[a] - t_re;
                im[b] = im[a] - t_im;
                re[a] += t_re;
                im[a] += t_im;
                let next = c_re * w_re - c_im * w_im;
                c_im = c_re * w_im + c_im * w_re;
                c_re = next;
            }
        }
        len <<= 1;
    }
}

/// A bin that stood out of the noise in one chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub freq: f64,
    pub time: f64,
    pub snr: f64,
}

/// Searches the chunk that starts at sample `start`.
pub fn search_chunk(p: &Params, start: u64) -> Vec<Candidate> {
    let n = p.chunk;
    let mut re: Vec<f64> = (0..n)
        .map(|k| {
            let window = 0.5 - 0.5 * (2.0 * PI * k as f64 / n as f64).cos();
            p.sample(start + k as u64) * window
        })
        .collect();
    let mut im = vec![0.0; n];
    fft(&mut re, &mut im);
    let power: Vec<f64> = (0..n / 2).map(|k| re[k] * re[k] + im[k] * im[k]).collect();
    // Noise power is exponential: its mean is the median / ln 2, and the
    // median ignores the few bins a signal occupies.
    let mut sorted = power[1..].to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean_noise = sorted[sorted.len() / 2] / std::f64::consts::LN_2;
    let bin_hz = p.sample_rate / n as f64;
    let time = (start as f64 + n as f64 / 2.0) / p.sample_rate;
    let mut found = Vec::new();
    for k in 2..n / 2 - 1 {
        let snr = power[k] / mean_noise;
        if snr > p.threshold && power[k] >= power[k - 1] && power[k] >= power[k + 1] {
            // Parabolic interpolation of the log power finds the tone
            // between bins.
            let (a, b, c) = (power[k - 1].ln(), power[k].ln(), power[k + 1].ln());
            let shift = 0.5 * (a - c) / (a - 2.0 * b + c);
            found.push(Candidate {
                freq: (k as f64 + shift) * bin_hz,
                time,
                snr,
            });
        }
    }
    found
}

/// A signal: candidates of one frequency, merged over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub freq: f64,
    pub peak_snr: f64,
    pub first_seen: f64,
    pub last_seen: f64,
    pub hits: u32,
}

/// Merges candidates whose frequencies lie within `tolerance` Hz.
pub fn merge(mut candidates: Vec<Candidate>, tolerance: f64) -> Vec<Detection> {
    candidates.sort_by(|a, b| a.freq.total_cmp(&b.freq));
    let mut out: Vec<(Detection, f64)> = Vec::new(); // with the snr-weighted frequency sum
    for c in candidates {
        match out.last_mut() {
            Some((d, wsum)) if c.freq - d.freq <= tolerance => {
                *wsum += c.snr;
                d.freq += (c.freq - d.freq) * c.snr / *wsum;
                d.peak_snr = d.peak_snr.max(c.snr);
                d.first_seen = d.first_seen.min(c.time);
                d.last_seen = d.last_seen.max(c.time);
                d.hits += 1;
            }
            _ => out.push((
                Detection {
                    freq: c.freq,
                    peak_snr: c.snr,
                    first_seen: c.time,
                    last_seen: c.time,
                    hits: 1,
                },
                c.snr,
            )),
        }
    }
    let mut detections: Vec<Detection> = out.into_iter().map(|(d, _)| d).collect();
    detections.sort_by(|a, b| b.hits.cmp(&a.hits).then(b.peak_snr.total_cmp(&a.peak_snr)));
    detections
}

pub struct Search;

impl task_sdk::Task for Search {
    fn split(&self, input: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let text =
            std::str::from_utf8(input).map_err(|_| "the job input is not text".to_string())?;
        let p = Params::parse(text)?;
        let header = p.to_text();
        let hop = (p.chunk / 2) as u64;
        let total = p.total_samples();
        let mut start = 0;
        while start + p.chunk as u64 <= total {
            emit(format!("{header}start {start}\n").as_bytes());
            start += hop;
        }
        Ok(())
    }

    fn run(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let text =
            std::str::from_utf8(input).map_err(|_| "the unit input is not text".to_string())?;
        let (params, start) = text
            .rsplit_once("start ")
            .ok_or("the unit input has no `start` line")?;
        let p = Params::parse(params)?;
        let start = start
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("start: {e}"))?;
        let mut out = String::new();
        for c in search_chunk(&p, start) {
            let _ = writeln!(out, "{:.3} {:.4} {:.2}", c.freq, c.time, c.snr);
        }
        Ok(out.into_bytes())
    }

    fn reduce(&self, outputs: Vec<&[u8]>) -> Result<Vec<u8>, String> {
        let mut candidates = Vec::new();
        for out in outputs {
            let text =
                std::str::from_utf8(out).map_err(|_| "a unit output is not text".to_string())?;
            for line in text.lines() {
                let v: Vec<f64> = line
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                if let [freq, time, snr] = v[..] {
                    candidates.push(Candidate { freq, time, snr });
                }
            }
        }
        let total = candidates.len();
        let detections = merge(candidates, 3.0);
        let mut out = format!(
            "# {total} candidates merged into {} signals; strongest first\n",
            detections.len()
        );
        out.push_str("# freq_hz   peak_snr  first_s  last_s  hits\n");
        for d in detections.iter().filter(|d| d.hits >= 2).take(20) {
            let _ = writeln!(
                out,
                "{:10.3} {:9.1} {:8.2} {:7.2} {:5}",
                d.freq, d.peak_snr, d.first_seen, d.last_seen, d.hits
            );
        }
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_finds_a_pure_tone_in_its_bin() {
        let n = 64;
        let mut re: Vec<f64> = (0..n)
            .map(|i| (2.0 * PI * 5.0 * i as f64 / n as f64).cos())
            .collect();
        let mut im = vec![0.0; n];
        fft(&mut re, &mut im);
        let peak = (0..n / 2)
            .max_by(|&a, &b| re[a].hypot(im[a]).total_cmp(&re[b].hypot(im[b])))
            .unwrap();
        assert_eq!(peak, 5);
    }

    #[test]
    fn the_search_finds_injected_signals_and_nothing_else() {
        let p = Params::parse(
            "seed 7\nsample_rate 8192\nseconds 8\nchunk 4096\nsignal 1234.5 0.3 0 8\n",
        )
        .unwrap();
        let mut all = Vec::new();
        for k in 0..7 {
            all.extend(search_chunk(&p, k * 2048));
        }
        let found = merge(all, 3.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((found[0].freq - 1234.5).abs() < 0.5, "{found:?}");
    }
}
