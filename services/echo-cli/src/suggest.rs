//! "Did you mean": the known name closest to a mistyped one (a leaf: the
//! commands that suggest names share it).

/// The name of `candidates` closest to `name`, if one is close enough to be
/// what was meant (a few letters off or swapped, as clap suggests subcommands).
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let allowed = (name.chars().count() / 4).clamp(1, 3);
    candidates
        .map(|candidate| (strsim::osa_distance(name, candidate), candidate))
        .filter(|&(distance, _)| distance <= allowed)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}
