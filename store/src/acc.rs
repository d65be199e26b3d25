//! The 256-bit multiset accumulator ("MSet-Add-Hash", Clarke et al. 2003).
//!
//! The root is the sum, mod 2^256, of one keyed term per live record. Adding and removing
//! records is a limb-wise add/subtract with carry; the order of records does not matter.

/// A 256-bit integer, little-endian 64-bit limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Acc([u64; 4]);

impl Acc {
    pub(crate) const ZERO: Acc = Acc([0; 4]);

    /// From 32 big-endian bytes.
    pub(crate) fn from_be_bytes(bytes: &[u8; 32]) -> Self {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            // Limb 0 is the least significant: the last 8 bytes.
            let start = 24 - 8 * i;
            let mut word = [0u8; 8];
            if let Some(src) = bytes.get(start..start + 8) {
                word.copy_from_slice(src);
            }
            *limb = u64::from_be_bytes(word);
        }
        Acc(limbs)
    }

    /// To 32 big-endian bytes.
    pub(crate) fn to_be_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            let start = 24 - 8 * i;
            if let Some(dst) = out.get_mut(start..start + 8) {
                dst.copy_from_slice(&limb.to_be_bytes());
            }
        }
        out
    }

    /// self += term (mod 2^256).
    pub(crate) fn add(&mut self, term: &[u8; 32]) {
        let t = Acc::from_be_bytes(term);
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(t.0) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
    }

    /// self -= term (mod 2^256).
    pub(crate) fn sub(&mut self, term: &[u8; 32]) {
        let t = Acc::from_be_bytes(term);
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(t.0) {
            let (d1, b1) = a.overflowing_sub(b);
            let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
            *a = d2;
            borrow = b1 || b2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Acc;
    use proptest::prelude::*;

    #[test]
    fn carries_across_limbs_and_wraps() {
        let mut a = Acc::ZERO;
        let mut max = [0xffu8; 32];
        a.add(&max);
        assert_eq!(a.to_be_bytes(), max);
        let mut one = [0u8; 32];
        one[31] = 1;
        a.add(&one);
        // 2^256 - 1 + 1 wraps to 0.
        assert_eq!(a, Acc::ZERO);
        a.sub(&one);
        assert_eq!(a.to_be_bytes(), max);
        // Carry out of limb 0 into limb 1.
        let mut b = Acc::ZERO;
        max[..24].fill(0);
        b.add(&max);
        b.add(&one);
        let mut expect = [0u8; 32];
        expect[23] = 1;
        assert_eq!(b.to_be_bytes(), expect);
    }

    proptest! {
        #[test]
        fn order_does_not_matter_and_sub_undoes_add(
            terms in proptest::collection::vec(any::<[u8; 32]>(), 0..16)
        ) {
            let mut fwd = Acc::ZERO;
            for t in &terms { fwd.add(t); }
            let mut rev = Acc::ZERO;
            for t in terms.iter().rev() { rev.add(t); }
            prop_assert_eq!(fwd, rev);
            prop_assert_eq!(Acc::from_be_bytes(&fwd.to_be_bytes()), fwd);
            for t in &terms { fwd.sub(t); }
            prop_assert_eq!(fwd, Acc::ZERO);
        }
    }
}
