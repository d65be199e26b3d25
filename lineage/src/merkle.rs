//! Merkle trees over a batch of entry digests, RFC 6962 style (domain-separated leaves and
//! nodes; an odd node is promoted), with inclusion proofs so each entry verifies alone.

use sha2::{Digest as _, Sha256};

/// Hash of a leaf: SHA-256(0x00 ‖ entry digest).
pub fn leaf_hash(entry_digest: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(entry_digest)
        .finalize()
        .into()
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(l)
        .chain_update(r)
        .finalize()
        .into()
}

/// The root over `leaves` (already leaf-hashed) and, for each leaf, its audit path.
pub fn root_and_proofs(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<Vec<[u8; 32]>>) {
    let mut proofs: Vec<Vec<[u8; 32]>> = vec![Vec::new(); leaves.len()];
    if leaves.is_empty() {
        return ([0; 32], proofs);
    }
    // positions[i] = index of leaf i's ancestor in the current level.
    let mut level: Vec<[u8; 32]> = leaves.to_vec();
    let mut positions: Vec<usize> = (0..leaves.len()).collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(node_hash(l, r)),
                [one] => next.push(*one),
                _ => {}
            }
        }
        for (leaf, pos) in positions.iter_mut().enumerate() {
            let sibling = *pos ^ 1;
            if let (Some(s), Some(p)) = (level.get(sibling), proofs.get_mut(leaf)) {
                p.push(*s);
            }
            *pos /= 2;
        }
        level = next;
    }
    (level.first().copied().unwrap_or([0; 32]), proofs)
}

/// Recomputes the root from a leaf, its index, the batch size and its audit path.
pub fn root_from_proof(
    leaf: &[u8; 32],
    mut index: usize,
    mut size: usize,
    path: &[[u8; 32]],
) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let mut h = *leaf;
    let mut it = path.iter();
    while size > 1 {
        let sibling = index ^ 1;
        if sibling < size {
            let s = it.next()?;
            h = if index.is_multiple_of(2) {
                node_hash(&h, s)
            } else {
                node_hash(s, &h)
            };
        }
        index /= 2;
        size = size.div_ceil(2);
    }
    if it.next().is_some() {
        return None;
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_verifies_and_a_wrong_leaf_does_not() {
        for n in 1..40usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(&[i as u8; 32])).collect();
            let (root, proofs) = root_and_proofs(&leaves);
            for (i, leaf) in leaves.iter().enumerate() {
                assert_eq!(
                    root_from_proof(leaf, i, n, &proofs[i]),
                    Some(root),
                    "n={n} i={i}"
                );
                assert_ne!(root_from_proof(&[9; 32], i, n, &proofs[i]), Some(root));
                if n > 1 {
                    assert_ne!(
                        root_from_proof(leaf, (i + 1) % n, n, &proofs[i]),
                        Some(root)
                    );
                }
            }
        }
    }
}
