//! What the mock says about a model it serves: family, size, quantization,
//! digest, context length and capabilities, as Ollama reports them in
//! `/api/tags`, `/api/ps` and `/api/show`.
//!
//! Clients show these fields (Open WebUI lists sizes and parameter counts,
//! `ollama list` prints size and digest), and a proxy that merges lists
//! passes them on, so they must look like a real server's. They are derived
//! from the model's name alone, deterministically: every backend that serves
//! `llama3.1:8b` describes it identically, as Ollama servers that pulled the
//! same model do, and a test can compare them.

/// The quantization every mock model claims: Ollama's default for the
/// models it pulls.
const QUANTIZATION: &str = "Q4_K_M";

/// `general.file_type` of a Q4_K_M GGUF file, for `/api/show`'s `model_info`.
const FILE_TYPE_Q4_K_M: u64 = 15;

/// Bytes a Q4_K_M model takes per thousand parameters: about 4.85 bits per
/// weight, which puts an 8B model at the 4.9 GB Ollama lists for
/// `llama3.1:8b`.
const BYTES_PER_THOUSAND_PARAMS: u64 = 606;

/// Parameters of a model whose name gives no size (`mistral`, `phi3:mini`):
/// a typical small model.
const DEFAULT_PARAMS: u64 = 7_000_000_000;

/// The context length a model claims in `model_info`.
const CONTEXT_LENGTH: u64 = 131_072;

/// The description of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelCard {
    /// Architecture name: the leading letters of the name (`llama`,
    /// `qwen`, `mistral`), which is what Ollama's `family` usually is.
    pub(crate) family: String,
    /// Parameter count, from a size in the name (`8b`, `0.5b`, `70B`).
    pub(crate) params: u64,
    /// Size on disk, and in memory once loaded, in bytes.
    pub(crate) size: u64,
    /// 64 hex digits, as Ollama's `digest`, unique to the name.
    pub(crate) digest: String,
    /// Whether it is an embedding model (the name says `embed`): Ollama
    /// gives it the `embedding` capability instead of `completion`.
    pub(crate) embedding: bool,
}

impl ModelCard {
    /// The card of the model called `name`.
    pub(crate) fn of(name: &str) -> ModelCard {
        let params = params_in(name).unwrap_or(DEFAULT_PARAMS);
        ModelCard {
            family: family_of(name),
            params,
            size: params / 1000 * BYTES_PER_THOUSAND_PARAMS,
            digest: digest_of(name),
            embedding: name.contains("embed"),
        }
    }

    /// Ollama's `parameter_size`: `8.0B`, `494.0M`.
    pub(crate) fn parameter_size(&self) -> String {
        // Tenths of a billion or million, rounded, without floating point.
        if self.params >= 1_000_000_000 {
            let tenths = (self.params + 50_000_000) / 100_000_000;
            format!("{}.{}B", tenths / 10, tenths % 10)
        } else {
            let tenths = (self.params + 50_000) / 100_000;
            format!("{}.{}M", tenths / 10, tenths % 10)
        }
    }

    /// Ollama's `details` object, as in `/api/tags`, `/api/ps`, `/api/show`.
    pub(crate) fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size(),
            "quantization_level": QUANTIZATION,
        })
    }

    /// `/api/show`'s `model_info`: the GGUF metadata keys clients read,
    /// the architecture's own ones under its name.
    pub(crate) fn model_info(&self) -> serde_json::Value {
        let arch = &self.family;
        serde_json::json!({
            "general.architecture": arch,
            "general.file_type": FILE_TYPE_Q4_K_M,
            "general.parameter_count": self.params,
            "general.quantization_version": 2,
            format!("{arch}.context_length"): CONTEXT_LENGTH,
            format!("{arch}.embedding_length"): 4096,
            format!("{arch}.block_count"): 32,
        })
    }

    /// `/api/show`'s `capabilities`.
    pub(crate) fn capabilities(&self) -> Vec<&'static str> {
        if self.embedding {
            vec!["embedding"]
        } else {
            vec!["completion", "tools"]
        }
    }
}

/// The leading ASCII letters of the name, lower-cased; `model` if none.
fn family_of(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let letters: String = base
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if letters.is_empty() {
        "model".to_string()
    } else {
        letters
    }
}

/// The parameter count a name states, as in `llama3.1:8b`,
/// `qwen2.5:0.5b`, `Qwen2.5-72B-Instruct` or `smollm:135m`: a part of the
/// name (split at `:`, `-`, `_` and `/`) that is a number followed by `b`
/// or `m`.
fn params_in(name: &str) -> Option<u64> {
    name.split([':', '-', '_', '/']).find_map(|part| {
        let lower = part.to_ascii_lowercase();
        let (number, scale) = match lower.as_bytes().last()? {
            b'b' => (&lower[..lower.len() - 1], 1_000_000_000u64),
            b'm' => (&lower[..lower.len() - 1], 1_000_000u64),
            _ => return None,
        };
        let (whole, tenths) = match number.split_once('.') {
            Some((w, f)) if f.len() == 1 => (w, f),
            Some(_) => return None,
            None => (number, "0"),
        };
        let whole: u64 = whole.parse().ok()?;
        let tenths: u64 = tenths.parse().ok()?;
        whole
            .checked_mul(scale)?
            .checked_add(tenths * (scale / 10))
            .filter(|&n| n > 0)
    })
}

/// 64 hex digits from the name: four FNV-1a hashes, each seeded with its
/// position. Not a content hash (there is no content), only stable and
/// distinct per name, which is what clients compare digests for.
fn digest_of(name: &str) -> String {
    (0u64..4)
        .map(|seed| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
            for b in name.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_size_and_family_from_the_name() {
        let card = ModelCard::of("llama3.1:8b");
        assert_eq!(card.family, "llama");
        assert_eq!(card.parameter_size(), "8.0B");
        assert_eq!(card.size, 4_848_000_000);
        assert_eq!(ModelCard::of("qwen2.5:0.5b").parameter_size(), "500.0M");
        assert_eq!(ModelCard::of("Qwen/Qwen2.5-72B").family, "qwen");
        assert_eq!(ModelCard::of("smollm:135m").parameter_size(), "135.0M");
        assert_eq!(ModelCard::of("phi3:mini").parameter_size(), "7.0B");
        assert_eq!(ModelCard::of("7b").family, "model");
        assert!(ModelCard::of("nomic-embed-text").embedding);
    }

    #[test]
    fn digests_are_stable_and_distinct() {
        let a = ModelCard::of("llama3.1:8b").digest;
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, ModelCard::of("llama3.1:8b").digest);
        assert_ne!(a, ModelCard::of("llama3.1:70b").digest);
    }
}
