//! The `iptables-restore --noflush` input of one `syncProxyRules` run and how it is
//! cut into transactions (`COMMIT`s) for the node's iptables backend: one
//! transaction per table on legacy, bounded transactions of whole Service ports on
//! nft (see [`crate::backend`] for the measurements behind the bounds).

use crate::backend::Backend;
use crate::render::{self, RestoreInput, ServicePortRules};

/// The `iptables-restore --noflush` input of one sync, as one process (one cache
/// fetch) and its number of transactions (`COMMIT`s): a single transaction, or (nft,
/// many chains to write) first sections of whole Service ports' chains, each its own
/// transaction, then the final filter and nat transactions with the top-level chains
/// and the stale deletions. On nft a transaction's cost grows with the square of its
/// size while each commit also pays for the table's size (see [`crate::backend`]);
/// many stale chains (nft) are deleted in one more transaction at the end.
pub fn plan(
    blocks: &[&ServicePortRules],
    skip: &[usize],
    stale: Vec<String>,
    backend: Backend,
) -> (String, usize) {
    let mut skipped = vec![false; blocks.len()];
    skip.iter().for_each(|i| skipped[*i] = true);
    let written: Vec<&ServicePortRules> = blocks
        .iter()
        .zip(&skipped)
        .filter(|(_, s)| !**s)
        .map(|(b, _)| *b)
        .collect();
    let total: usize = written.iter().map(|b| b.chains.len()).sum();
    let separate_stale = backend
        .max_stale_in_top_level()
        .is_some_and(|m| stale.len() > m);
    let (inline_stale, late_stale) = if separate_stale {
        (Vec::new(), stale)
    } else {
        (stale, Vec::new())
    };
    let single = |skip: &[usize]| {
        skip.iter()
            .fold(RestoreInput::from_refs(blocks.to_vec()), |ri, i| {
                ri.skip_chains_of(*i)
            })
            .delete_chains(inline_stale.clone())
            .render()
    };
    let (mut out, mut commits) = match backend.max_chains_per_commit().filter(|m| total > *m) {
        None => (single(skip), 2),
        Some(max) => {
            let sections = sections(written, max);
            let all: Vec<usize> = (0..blocks.len()).collect();
            let top = single(&all);
            let mut out = String::with_capacity(top.len() * 8);
            for section in &sections {
                render::render_chain_batch(section, &mut out);
            }
            out.push_str(&top);
            (out, sections.len() + 2)
        }
    };
    if !late_stale.is_empty() {
        render::render_stale_deletion(&late_stale, &mut out);
        commits += 1;
    }
    (out, commits)
}

/// Whole Service ports' blocks grouped so that no group writes more than `max`
/// chains (unless one block alone does).
fn sections(written: Vec<&ServicePortRules>, max: usize) -> Vec<Vec<&ServicePortRules>> {
    let mut sections: Vec<Vec<&ServicePortRules>> = vec![Vec::new()];
    let mut in_section = 0;
    for b in written {
        if in_section + b.chains.len() > max && in_section > 0 {
            sections.push(Vec::new());
            in_section = 0;
        }
        in_section += b.chains.len();
        if let Some(section) = sections.last_mut() {
            section.push(b);
        }
    }
    sections
}
