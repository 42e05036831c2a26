//! Three compute kernels, the same code natively and in wasm: an integer
//! sieve, a floating-point Mandelbrot set and an n-body simulation. The
//! `run` mode takes `NAME SIZE` and prints the kernel's result, so the
//! benchmark can check that both builds computed the same thing.

/// Counts the primes below `n`.
pub fn sieve(n: usize) -> u64 {
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            // i * i overflows usize on wasm32 for i > 65535.
            if i > n / i {
                continue;
            }
            let mut m = i * i;
            while m < n {
                composite[m] = true;
                m += i;
            }
        }
    }
    count
}

/// The total escape-iteration count over a `size` x `size` grid.
pub fn mandelbrot(size: usize) -> u64 {
    let mut total = 0;
    for py in 0..size {
        for px in 0..size {
            let cx = -2.0 + 2.5 * px as f64 / size as f64;
            let cy = -1.25 + 2.5 * py as f64 / size as f64;
            let (mut x, mut y, mut i) = (0.0f64, 0.0f64, 0u64);
            while i < 500 && x * x + y * y <= 4.0 {
                let t = x * x - y * y + cx;
                y = 2.0 * x * y + cy;
                x = t;
                i += 1;
            }
            total += i;
        }
    }
    total
}

/// The energy of the five-planet system after `steps` steps of 0.01 days,
/// as in the Computer Language Benchmarks Game.
pub fn nbody(steps: usize) -> f64 {
    const PI: f64 = std::f64::consts::PI;
    const SOLAR_MASS: f64 = 4.0 * PI * PI;
    const DAYS: f64 = 365.24;
    let mut b: [[f64; 7]; 5] = [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, SOLAR_MASS],
        [
            4.841_431_442_464_72,
            -1.160_320_044_027_428_4,
            -0.103_622_044_471_123_1,
            1.660_076_642_744_037e-3 * DAYS,
            7.699_011_184_197_404e-3 * DAYS,
            -6.904_600_169_720_63e-5 * DAYS,
            9.547_919_384_243_266e-4 * SOLAR_MASS,
        ],
        [
            8.343_366_718_244_58,
            4.124_798_564_124_305,
            -4.035_234_171_143_214e-1,
            -2.767_425_107_268_624e-3 * DAYS,
            4.998_528_012_349_172e-3 * DAYS,
            2.304_172_975_737_639_3e-5 * DAYS,
            2.858_859_806_661_308e-4 * SOLAR_MASS,
        ],
        [
            1.289_436_956_213_913_1e1,
            -1.511_115_140_169_863_1e1,
            -2.233_075_788_926_557_3e-1,
            2.964_601_375_647_616e-3 * DAYS,
            2.378_471_739_594_809_5e-3 * DAYS,
            -2.965_895_685_402_375_6e-5 * DAYS,
            4.366_244_043_351_563e-5 * SOLAR_MASS,
        ],
        [
            1.537_969_711_485_091_1e1,
            -2.591_931_460_998_796_4e1,
            1.792_587_729_503_711_8e-1,
            2.680_677_724_903_893_2e-3 * DAYS,
            1.628_241_700_382_423e-3 * DAYS,
            -9.515_922_545_197_159e-5 * DAYS,
            5.151_389_020_466_114_5e-5 * SOLAR_MASS,
        ],
    ];
    // Offset the sun's momentum so the system's is zero.
    let mut p = [0.0; 3];
    for body in &b {
        for k in 0..3 {
            p[k] += body[3 + k] * body[6];
        }
    }
    for k in 0..3 {
        b[0][3 + k] = -p[k] / SOLAR_MASS;
    }
    let dt = 0.01;
    for _ in 0..steps {
        for i in 0..5 {
            for j in i + 1..5 {
                let d = [b[i][0] - b[j][0], b[i][1] - b[j][1], b[i][2] - b[j][2]];
                let d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                let mag = dt / (d2 * d2.sqrt());
                let (mi, mj) = (b[i][6], b[j][6]);
                for k in 0..3 {
                    b[i][3 + k] -= d[k] * mj * mag;
                    b[j][3 + k] += d[k] * mi * mag;
                }
            }
        }
        for body in &mut b {
            for k in 0..3 {
                body[k] += dt * body[3 + k];
            }
        }
    }
    let mut e = 0.0;
    for i in 0..5 {
        let v2 = b[i][3] * b[i][3] + b[i][4] * b[i][4] + b[i][5] * b[i][5];
        e += 0.5 * b[i][6] * v2;
        for j in i + 1..5 {
            let d = [b[i][0] - b[j][0], b[i][1] - b[j][1], b[i][2] - b[j][2]];
            e -= b[i][6] * b[j][6] / (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        }
    }
    e
}

/// Runs the kernel `name` at `size` and formats its result.
pub fn run(name: &str, size: usize) -> Result<String, String> {
    Ok(match name {
        "sieve" => sieve(size).to_string(),
        "mandelbrot" => mandelbrot(size).to_string(),
        "nbody" => format!("{:.9}", nbody(size)),
        "noop" => String::new(),
        other => {
            return Err(format!(
                "unknown kernel {other:?}: sieve, mandelbrot, nbody or noop"
            ));
        }
    })
}

pub struct Kernels;

impl task_sdk::Task for Kernels {
    fn run(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(input).map_err(|_| "input is `NAME SIZE`".to_string())?;
        let mut words = text.split_whitespace();
        let name = words.next().unwrap_or("noop");
        let size = words
            .next()
            .unwrap_or("0")
            .parse::<usize>()
            .map_err(|e| format!("SIZE: {e}"))?;
        run(name, size).map(String::into_bytes)
    }

    /// Two outputs are equivalent when both are numbers within a relative
    /// 1e-6 of each other (floats from different CPUs may differ in the
    /// last digits), or when their bytes are equal.
    fn compare(&self, a: &[u8], b: &[u8]) -> Result<bool, String> {
        let number = |x: &[u8]| std::str::from_utf8(x).ok()?.trim().parse::<f64>().ok();
        Ok(match (number(a), number(b)) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
            _ => a == b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_give_known_answers() {
        assert_eq!(sieve(1000), 168);
        assert_eq!(format!("{:.9}", nbody(1000)), "-0.169087605");
        assert!(mandelbrot(16) > 0);
    }

    #[test]
    fn compare_allows_a_relative_1e6() {
        use task_sdk::Task as _;
        assert_eq!(Kernels.compare(b"-0.169087605", b"-0.169087606"), Ok(true));
        assert_eq!(Kernels.compare(b"-0.169087605", b"-0.170000000"), Ok(false));
        assert_eq!(Kernels.compare(b"abc", b"abc"), Ok(true));
        assert_eq!(Kernels.compare(b"abc", b"abd"), Ok(false));
    }
}
