//! `models:`: discovery, aliases and fallbacks, fleet-wide.

use super::Errors;
use crate::config::model::ModelsSpec;
use crate::config::raw::RawModels;
use std::ops::RangeInclusive;
use std::time::Duration;

/// A model pulled onto a backend is routable within half a minute, at one
/// small request per backend each time.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// The discovery service looks at its clock every 250ms, so a shorter
/// refresh would not be kept. A day at most: a model list older than that
/// is fiction, and the service adds this to the clock, which must not
/// overflow.
pub const REFRESH: RangeInclusive<Duration> =
    Duration::from_millis(250)..=Duration::from_secs(24 * 3600);

pub(super) fn models(errors: &mut Errors, raw: RawModels) -> ModelsSpec {
    let aliases = raw.aliases.unwrap_or_default();
    for (alias, target) in &aliases {
        if target.is_empty() {
            errors.push(
                format!("models.aliases.{alias}"),
                "the target model is empty",
            );
        } else if aliases.contains_key(target) {
            errors.push(
                format!("models.aliases.{alias}"),
                format!("{target:?} is itself an alias; aliases are not chained"),
            );
        }
    }
    let fallbacks = raw.fallbacks.unwrap_or_default();
    for (model, list) in &fallbacks {
        errors.mistyped(&format!("models.fallbacks.{model}"), || {
            "a list of strings".into()
        });
        if list.is_empty() {
            errors.push(
                format!("models.fallbacks.{model}"),
                "lists no fallback model",
            );
        }
        if list.contains(model) {
            errors.push(
                format!("models.fallbacks.{model}"),
                "lists the model itself",
            );
        }
    }
    ModelsSpec {
        refresh: errors.duration(
            "models.refresh",
            raw.refresh.as_ref(),
            DEFAULT_REFRESH,
            &REFRESH,
        ),
        aliases,
        fallbacks,
    }
}
