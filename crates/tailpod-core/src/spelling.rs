//! Near misses: which known word a mistyped one was probably meant to be, for error messages
//! that say what to write instead.

/// The candidate closest to `wrong`: the same but for case, else within a small edit distance
/// (a typo, not a different word).
pub fn suggest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.collect();
    if let Some(same) = candidates.iter().find(|c| c.eq_ignore_ascii_case(wrong)) {
        return Some(same);
    }
    let limit = (wrong.len() / 4).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (distance(&wrong.to_ascii_lowercase(), &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_near_misses_only() {
        let keys = ["PublishPort", "Image", "Network"];
        assert_eq!(suggest("publishport", keys.into_iter()), Some("PublishPort"));
        assert_eq!(suggest("Imgae", keys.into_iter()), Some("Image"));
        assert_eq!(suggest("PublishPorts", keys.into_iter()), Some("PublishPort"));
        assert_eq!(suggest("Completely", keys.into_iter()), None);
        assert_eq!(
            suggest("Net", keys.into_iter()),
            None,
            "a short word is not a typo of a long one"
        );
    }
}
