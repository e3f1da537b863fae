//! Parsers of the numeric flags: a value that would silently turn a feature off or produce
//! garbage (NaN, inf, a negative guidance, a billion steps) is refused by clap, naming the
//! flag, before anything loads.

use illume::diffusion::scheduler::MAX_STEPS;

/// Largest guidance scale accepted; beyond it the guided logits or latents overflow into
/// an all-white or constant output.
const MAX_GUIDANCE: f64 = 100.0;
/// Largest temperature accepted (already indistinguishable from uniform sampling).
const MAX_TEMPERATURE: f64 = 100.0;

fn number(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("`{text}` is not a finite number"))
    }
}

/// A classifier-free guidance scale: 1 turns guidance off, larger values strengthen it.
pub fn guidance(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if (1.0..=MAX_GUIDANCE).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is outside [1, {MAX_GUIDANCE}] (1 turns guidance off; below 1 the \
             official pipelines silently skip guidance)"
        ))
    }
}

/// [`guidance`] as the MLLM's f32.
pub fn guidance_f32(text: &str) -> Result<f32, String> {
    guidance(text).map(|v| v as f32)
}

/// A sampling temperature: positive (use --greedy for arg-max decoding).
pub fn temperature(text: &str) -> Result<f32, String> {
    let value = number(text)?;
    if value > 0.0 && value <= MAX_TEMPERATURE {
        Ok(value as f32)
    } else {
        Err(format!(
            "{value} is outside (0, {MAX_TEMPERATURE}] (for deterministic decoding use the \
             greedy mode instead of temperature 0)"
        ))
    }
}

/// A nucleus (top-p) mass in (0, 1]; 1 keeps every token.
pub fn top_p(text: &str) -> Result<f32, String> {
    let value = number(text)?;
    if value > 0.0 && value <= 1.0 {
        Ok(value as f32)
    } else {
        Err(format!("{value} is outside (0, 1] (1 turns top-p off)"))
    }
}

/// Denoising steps, 1 to [`MAX_STEPS`].
pub fn steps(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_STEPS).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a step count from 1 to {MAX_STEPS} (the official demos use 20, \
             evaluation 50)"
        )),
    }
}

/// A count that must be at least 1 (tokens, pixels, MiB).
pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_values_are_refused() {
        for bad in ["NaN", "nan", "inf", "-inf", "0", "-5", "0.5", "101", "x"] {
            assert!(guidance(bad).is_err(), "guidance {bad}");
        }
        assert_eq!(guidance("1"), Ok(1.0));
        assert_eq!(guidance(" 7.5 "), Ok(7.5));
        for bad in ["NaN", "inf", "0", "-0.1", "1000"] {
            assert!(temperature(bad).is_err(), "temperature {bad}");
        }
        assert_eq!(temperature("0.7"), Ok(0.7));
        for bad in ["NaN", "0", "1.01", "-1"] {
            assert!(top_p(bad).is_err(), "top-p {bad}");
        }
        assert_eq!(top_p("1"), Ok(1.0));
        for bad in ["0", "1001", "1e9", "-3", "20.5"] {
            assert!(steps(bad).is_err(), "steps {bad}");
        }
        assert_eq!(steps("50"), Ok(50));
        assert!(positive("0").is_err());
        assert_eq!(positive("3"), Ok(3));
    }
}
