use super::*;
use crate::render;
use crate::sync::tests::{cfg, many};

#[test]
fn stale_chains_are_found_by_count_or_by_name() {
    let blocks = render::render_blocks(&many(3), &cfg());
    let refs: Vec<&ServicePortRules> = blocks.iter().collect();
    let mut existing: HashSet<String> = refs
        .iter()
        .flat_map(|b| b.chain_names())
        .map(String::from)
        .collect();
    existing.insert("KUBE-POSTROUTING".into());
    assert!(stale_chains(&refs, &existing).is_empty());
    existing.insert("KUBE-SEP-GONE".into());
    assert_eq!(stale_chains(&refs, &existing), vec!["KUBE-SEP-GONE"]);
    // The same port twice names its chains twice: a count alone would miss the
    // four stale chains here.
    let twice = vec![refs[0], refs[0], refs[1]];
    let mut existing: HashSet<String> = twice[1..]
        .iter()
        .flat_map(|b| b.chain_names())
        .map(String::from)
        .collect();
    let gone: Vec<String> = (0..4).map(|i| format!("KUBE-SEP-GONE{i}")).collect();
    existing.extend(gone.iter().cloned());
    assert_eq!(stale_chains(&twice, &existing), gone);
}
