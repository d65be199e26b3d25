//! Intel TDX: DCAP quotes (v4/v5) verified with `dcap-qvl` against offline collateral.
//!
//! The collateral (TCB info, QE identity, their issuer chains, the root CA and PCK CRLs)
//! is dcap-qvl's `QuoteCollateralV3` JSON carried in [`crate::Evidence::collateral`]; it is
//! never fetched. The PCK chain comes from the quote (cert_data type 5). The trust anchor
//! is the Intel SGX Root CA built into dcap-qvl. dcap-qvl checks that `now` lies in the
//! collateral's window, the CRLs, the QE identity and report, and all signatures, then
//! matches the TCB level. Debug TDs are let through dcap-qvl (`allow_debug(true)`) so
//! that the reference values decide, with a typed [`crate::Rejection::DebugNotAllowed`].

#[cfg(feature = "tdx")]
mod imp;
/// Parsed TDX collateral (dcap-qvl's `QuoteCollateralV3`), for callers that keep it cached.
#[cfg(feature = "tdx")]
pub use dcap_qvl::QuoteCollateralV3 as TdxCollateral;
#[cfg(feature = "tdx")]
pub(crate) use imp::appraise_tdx;
#[cfg(all(test, feature = "tdx"))]
pub(crate) use imp::td_claims;
#[cfg(feature = "tdx")]
pub use imp::TdxVerifier;

#[cfg(not(feature = "tdx"))]
mod disabled;
#[cfg(not(feature = "tdx"))]
pub use disabled::TdxVerifier;

/// Among candidate collateral files (dcap-qvl `QuoteCollateralV3` JSON), the one whose TCB
/// info is for the quote's FMSPC. `None` if none matches or the `tdx` feature is off.
pub fn pick_collateral<'a>(quote: &[u8], candidates: &'a [Vec<u8>]) -> Option<&'a Vec<u8>> {
    #[cfg(feature = "tdx")]
    {
        imp::pick_collateral(quote, candidates)
    }
    #[cfg(not(feature = "tdx"))]
    {
        let _ = (quote, candidates);
        None
    }
}
