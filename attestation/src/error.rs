//! Errors, per operation. Attacker-controlled input ([`ParseError`], most of
//! [`VerifyError`]) is kept apart from caller misuse ([`VerifyError::ReportDataLength`],
//! [`VerifyError::BackendDisabled`]) and from reference-value verdicts ([`Rejection`]).

use crate::evidence::Platform;
use crate::time::Timestamp;

/// Untrusted bytes that do not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input ended before a field.
    #[error("{what}: truncated at offset {offset} (needed {needed} more bytes)")]
    Truncated {
        /// The structure being parsed.
        what: &'static str,
        /// Where the missing field starts.
        offset: usize,
        /// How many bytes the field needs.
        needed: usize,
    },
    /// The input has a fixed size and this is not it.
    #[error("{what}: expected {expected} bytes, got {found}")]
    Length {
        /// The structure being parsed.
        what: &'static str,
        /// The size the format defines.
        expected: usize,
        /// The size received.
        found: usize,
    },
    /// Bytes were left over after the structure.
    #[error("{what}: {count} trailing bytes")]
    TrailingBytes {
        /// The structure being parsed.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A magic number or signature string is wrong.
    #[error("{what}: bad magic")]
    BadMagic {
        /// The structure being parsed.
        what: &'static str,
    },
    /// A version this crate does not know; unknown versions fail, never guess.
    #[error("{what}: unsupported version {version}")]
    UnsupportedVersion {
        /// The structure being parsed.
        what: &'static str,
        /// The version found.
        version: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: invalid {field}: {reason}")]
    InvalidField {
        /// The structure being parsed.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A certificate could not be decoded.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A third-party parser (`sev`, `dcap-qvl`, JSON) rejected the bytes.
    #[error("{what}: {reason}")]
    Foreign {
        /// The structure being parsed.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
}

/// Why evidence did not verify. Returned by [`crate::Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The backend for this platform was compiled out (its cargo feature is off).
    #[error("the {platform} verifier is disabled (enable cargo feature `{feature}`)")]
    BackendDisabled {
        /// The platform asked for.
        platform: Platform,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The evidence names another platform than the verifier it was given to.
    #[error("evidence is for {found}, verifier is for {expected}")]
    PlatformMismatch {
        /// The verifier's platform.
        expected: Platform,
        /// The evidence's platform.
        found: Platform,
    },
    /// Caller misuse: the expected report data has the wrong length. Never padded or
    /// truncated.
    #[error("expected report data must be {expected} bytes, got {found}")]
    ReportDataLength {
        /// The length the platform binds.
        expected: String,
        /// The length passed.
        found: usize,
    },
    /// The evidence is malformed.
    #[error("malformed evidence: {0}")]
    Malformed(#[from] ParseError),
    /// A certificate or collateral item needed for verification is not in the evidence
    /// nor among the supplied endorsements.
    #[error("missing {0}")]
    MissingEndorsement(&'static str),
    /// A certificate chain does not lead to the pinned vendor root.
    #[error("certificate chain: {reason}")]
    CertificateChain {
        /// What failed.
        reason: String,
    },
    /// A certificate is not valid at the verification time.
    #[error("certificate {subject} not valid at {now} (valid {not_before}..{not_after})")]
    CertificateNotValidAt {
        /// The certificate's subject common name.
        subject: String,
        /// Start of validity (Unix seconds).
        not_before: u64,
        /// End of validity (Unix seconds).
        not_after: u64,
        /// The verification time.
        now: Timestamp,
    },
    /// A signature over the report or quote does not verify.
    #[error("bad signature on {0}")]
    Signature(&'static str),
    /// The report binds other data than expected (wrong nonce or key).
    #[error("report data does not match the expected value")]
    ReportDataMismatch,
    /// Two parts of the evidence that must agree do not (Azure: HCL runtime data vs.
    /// hardware report data; TD quote vs. TDREPORT; PCR values vs. PCR digest).
    #[error("binding check failed: {0}")]
    Binding(&'static str),
    /// The SNP TCB values are inconsistent (REPORTED ≤ COMMITTED ≤ CURRENT, or the VCEK's
    /// TCB extensions differ from REPORTED_TCB).
    #[error("inconsistent TCB: {0}")]
    TcbInconsistent(String),
    /// The processor family of the report and of its certificate chain differ.
    #[error("processor family mismatch: report says {report}, chain says {chain}")]
    FamilyMismatch {
        /// Family from the report's CPUID fields.
        report: String,
        /// Family of the certificate chain.
        chain: String,
    },
    /// TDX collateral is invalid, expired or does not cover the quote (dcap-qvl's reason
    /// kept verbatim).
    #[error("TDX collateral: {reason}")]
    Collateral {
        /// dcap-qvl's message.
        reason: String,
    },
    /// The TDX platform TCB matches no level of the TCB info.
    #[error("TDX: no matching TCB level in the collateral")]
    TcbLevelNotFound,
    /// The TDX quote failed dcap-qvl's verification for another reason.
    #[error("TDX quote: {reason}")]
    Quote {
        /// dcap-qvl's message.
        reason: String,
    },
    /// The evidence verified but the reference values reject it.
    #[error("rejected by reference values: {0}")]
    Rejected(#[from] Rejection),
}

/// A reference-value verdict: the evidence is genuine, but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// This platform is not in `allowed_platforms`.
    #[error("platform {0} not allowed")]
    PlatformNotAllowed(Platform),
    /// Software evidence without `allow_software = true`.
    #[error("software evidence is not acceptable (reference values do not allow it)")]
    SoftwareNotAllowed,
    /// The guest allows debugging and reference values forbid it.
    #[error("debug is allowed in the guest and forbidden by reference values")]
    DebugNotAllowed,
    /// The SNP guest allows a migration agent and reference values forbid it.
    #[error("migration agent allowed in the guest and forbidden by reference values")]
    MigrationAgentNotAllowed,
    /// The SNP guest allows SMT and reference values forbid it.
    #[error("SMT allowed in the guest and forbidden by reference values")]
    SmtNotAllowed,
    /// A measurement is not in its allow-list.
    #[error("measurement {name} = {value} not allowed")]
    MeasurementNotAllowed {
        /// Claim name (e.g. `snp.measurement`, `tdx.mrtd`, `pcr7`).
        name: String,
        /// Hex value found.
        value: String,
    },
    /// The TCB is below the minimum.
    #[error("TCB component {component} is {found}, minimum {minimum}")]
    TcbBelowMinimum {
        /// Component name.
        component: &'static str,
        /// Reported value.
        found: u64,
        /// Required minimum.
        minimum: u64,
    },
    /// The TDX TCB status is not in `accepted_tcb_status`.
    #[error("TDX TCB status {0} not accepted")]
    TcbStatusNotAccepted(String),
    /// The SNP chip family is not in `allowed_chip_families`.
    #[error("chip family {0} not allowed")]
    ChipFamilyNotAllowed(String),
    /// HOST_DATA / MRCONFIGID not in its allow-list.
    #[error("host data {0} not allowed")]
    HostDataNotAllowed(String),
    /// The SNP VMPL is above `max_vmpl`.
    #[error("VMPL {found} above maximum {maximum}")]
    VmplTooHigh {
        /// Reported VMPL.
        found: u32,
        /// Maximum allowed.
        maximum: u32,
    },
    /// The SNP ID_KEY_DIGEST is not in `snp.allowed_id_key_digests`.
    #[error("ID key digest {0} not allowed")]
    IdKeyNotAllowed(String),
    /// The SNP GUEST_SVN is below `snp.min_guest_svn`.
    #[error("guest SVN {found} below minimum {minimum}")]
    GuestSvnBelowMinimum {
        /// Reported GUEST_SVN.
        found: u32,
        /// Required minimum.
        minimum: u32,
    },
    /// The software TEE key is not in `software.allowed_keys`.
    #[error("software key {0} not allowed")]
    SoftwareKeyNotAllowed(String),
}

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The attester was compiled out.
    #[error("the {backend} attester is disabled (enable cargo feature `{feature}`)")]
    BackendDisabled {
        /// The attester asked for.
        backend: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The attester is compiled in but none of the kernel interfaces it may use exists on
    /// this machine (not a confidential VM, or a kernel without them). Never answered by
    /// falling back to the software TEE.
    #[error(
        "no hardware attestation interface on this machine (tried: {})",
        .tried.join(", ")
    )]
    NoHardwareInterface {
        /// The interfaces looked for, in order, as `name (path)`.
        tried: Vec<&'static str>,
    },
    /// The requested VMPL is not one the SNP firmware knows (0..=3).
    #[error("VMPL {0} is outside 0..=3")]
    InvalidVmpl(u32),
    /// Reading or writing an interface file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The signing key could not be loaded.
    #[error("signing key: {0}")]
    Key(String),
    /// The kernel interface returned something unexpected.
    #[error("kernel interface: {0}")]
    Kernel(String),
    /// The produced report does not parse.
    #[error("produced evidence is malformed: {0}")]
    Malformed(#[from] ParseError),
}
