//! The software TEE: an Ed25519 key in a file signs a report with the same fields a
//! hardware report has. **It proves nothing about the machine.** Its appraisal says
//! platform `software` and hardware `contraindicated`, and [`crate::ReferenceValues`]
//! refuse it unless they say `allow_software = true` and list `"software"`.
//!
//! Report layout (256 bytes, little-endian integers):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SJSWREP1` |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | flags (bit 0: debug) |
//! | 16 | 48 | measurement |
//! | 64 | 32 | host data |
//! | 96 | 64 | report data |
//! | 160 | 32 | Ed25519 public key |
//! | 192 | 64 | Ed25519 signature over bytes 0..192 |
//!
//! Key file: the 32-byte Ed25519 seed as 64 hex characters (whitespace ignored).

/// The first bytes of every software report.
pub const REPORT_MAGIC: &[u8; 8] = b"SJSWREP1";
/// Size of a software report.
pub const REPORT_LEN: usize = 256;
#[cfg(feature = "software")]
const SIGNED_LEN: usize = 192;

#[cfg(feature = "software")]
pub use imp::{SoftwareAttester, SoftwareKey, SoftwareVerifier};

#[cfg(not(feature = "software"))]
pub use disabled::SoftwareVerifier;

#[cfg(not(feature = "software"))]
mod disabled {
    use crate::error::VerifyError;
    use crate::evidence::Platform;

    /// Placeholder: the `software` feature is off.
    #[derive(Debug)]
    pub struct SoftwareVerifier(());

    impl SoftwareVerifier {
        /// Always [`VerifyError::BackendDisabled`].
        pub fn new() -> Result<Self, VerifyError> {
            Err(VerifyError::BackendDisabled {
                platform: Platform::Software,
                feature: "software",
            })
        }
    }

    impl crate::Verifier for SoftwareVerifier {
        fn platform(&self) -> Platform {
            Platform::Software
        }
        fn verify(
            &self,
            _: &crate::Evidence,
            _: &[u8],
            _: &crate::ReferenceValues,
            _: crate::Timestamp,
        ) -> Result<crate::Appraisal, VerifyError> {
            Err(VerifyError::BackendDisabled {
                platform: Platform::Software,
                feature: "software",
            })
        }
    }
}

#[cfg(feature = "software")]
mod imp {
    use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

    use super::{REPORT_LEN, REPORT_MAGIC, SIGNED_LEN};
    use crate::bytes::Reader;
    use crate::claims::{Appraisal, Claims, ComponentAppraisal, TrustClaim, TrustVector};
    use crate::error::{AttestError, ParseError, Rejection, VerifyError};
    use crate::evidence::{Evidence, Platform};
    use crate::reference::{check_allowed, ReferenceValues};
    use crate::time::Timestamp;

    /// An Ed25519 signing key for the software TEE.
    pub struct SoftwareKey {
        seed: [u8; 32],
        pair: Ed25519KeyPair,
    }

    impl std::fmt::Debug for SoftwareKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SoftwareKey")
                .field("public", &hex::encode(self.public_key()))
                .finish_non_exhaustive()
        }
    }

    impl SoftwareKey {
        /// From a 32-byte seed.
        pub fn from_seed(seed: [u8; 32]) -> Result<Self, AttestError> {
            let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|e| AttestError::Key(e.to_string()))?;
            Ok(Self { seed, pair })
        }

        /// From the key-file text: 64 hex characters.
        pub fn from_seed_hex(text: &str) -> Result<Self, AttestError> {
            let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = hex::decode(&clean).map_err(|e| AttestError::Key(e.to_string()))?;
            let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                AttestError::Key("seed must be 32 bytes (64 hex characters)".into())
            })?;
            Self::from_seed(seed)
        }

        /// A fresh random key.
        pub fn generate() -> Result<Self, AttestError> {
            use ring::rand::SecureRandom;
            let mut seed = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut seed)
                .map_err(|_| AttestError::Key("no randomness".into()))?;
            Self::from_seed(seed)
        }

        /// The key-file text (64 hex characters and a newline).
        pub fn to_seed_hex(&self) -> String {
            format!("{}\n", hex::encode(self.seed))
        }

        /// The 32-byte public key.
        pub fn public_key(&self) -> [u8; 32] {
            let mut out = [0u8; 32];
            for (o, b) in out.iter_mut().zip(self.pair.public_key().as_ref()) {
                *o = *b;
            }
            out
        }
    }

    /// Produces software evidence. Insecure by design; see the module docs.
    #[derive(Debug)]
    pub struct SoftwareAttester {
        key: SoftwareKey,
        measurement: [u8; 48],
        host_data: [u8; 32],
        debug: bool,
    }

    impl SoftwareAttester {
        /// An attester signing with `key`, measurement and host data zero, debug off.
        pub fn new(key: SoftwareKey) -> Self {
            Self {
                key,
                measurement: [0; 48],
                host_data: [0; 32],
                debug: false,
            }
        }

        /// Set the measurement the reports claim (e.g. a SHA-384 of the host binary).
        pub fn with_measurement(mut self, m: [u8; 48]) -> Self {
            self.measurement = m;
            self
        }

        /// Set the host data the reports claim.
        pub fn with_host_data(mut self, h: [u8; 32]) -> Self {
            self.host_data = h;
            self
        }

        /// Set the debug flag the reports claim.
        pub fn with_debug(mut self, debug: bool) -> Self {
            self.debug = debug;
            self
        }
    }

    impl crate::Attester for SoftwareAttester {
        fn platform(&self) -> Platform {
            Platform::Software
        }

        fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
            let mut r = Vec::with_capacity(REPORT_LEN);
            r.extend(REPORT_MAGIC);
            r.extend(1u32.to_le_bytes());
            r.extend(u32::from(self.debug).to_le_bytes());
            r.extend(self.measurement);
            r.extend(self.host_data);
            r.extend(report_data);
            r.extend(self.key.public_key());
            let sig = self.key.pair.sign(&r);
            r.extend(sig.as_ref());
            Ok(Evidence::new(Platform::Software, r))
        }
    }

    struct Parsed {
        debug: bool,
        measurement: [u8; 48],
        host_data: [u8; 32],
        report_data: [u8; 64],
        public_key: [u8; 32],
        signature: [u8; 64],
    }

    fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
        const W: &str = "software report";
        if bytes.len() != REPORT_LEN {
            return Err(ParseError::Length {
                what: W,
                expected: REPORT_LEN,
                found: bytes.len(),
            });
        }
        let mut r = Reader::new(bytes, W);
        if &r.array::<8>()? != REPORT_MAGIC {
            return Err(ParseError::BadMagic { what: W });
        }
        let version = r.u32_le()?;
        if version != 1 {
            return Err(ParseError::UnsupportedVersion {
                what: W,
                version: u64::from(version),
            });
        }
        let flags = r.u32_le()?;
        if flags & !1 != 0 {
            return Err(ParseError::InvalidField {
                what: W,
                field: "flags",
                reason: format!("unknown bits {flags:#x}"),
            });
        }
        let p = Parsed {
            debug: flags & 1 != 0,
            measurement: r.array()?,
            host_data: r.array()?,
            report_data: r.array()?,
            public_key: r.array()?,
            signature: r.array()?,
        };
        debug_assert_eq!(r.position(), REPORT_LEN);
        r.finish()?;
        Ok(p)
    }

    /// Verifies software evidence. Only reference values that explicitly allow software
    /// accept it, and the appraisal always says hardware `contraindicated`.
    #[derive(Debug, Clone, Default)]
    pub struct SoftwareVerifier(());

    impl SoftwareVerifier {
        /// The verifier.
        pub fn new() -> Result<Self, VerifyError> {
            Ok(Self(()))
        }
    }

    impl crate::Verifier for SoftwareVerifier {
        fn platform(&self) -> Platform {
            Platform::Software
        }

        fn verify(
            &self,
            evidence: &Evidence,
            expected_report_data: &[u8],
            rv: &ReferenceValues,
            now: Timestamp,
        ) -> Result<Appraisal, VerifyError> {
            evidence.expect_platform(Platform::Software)?;
            crate::evidence::check_report_data_len(expected_report_data)?;
            let p = parse(&evidence.report)?;
            let signed = evidence
                .report
                .get(..SIGNED_LEN)
                .ok_or(ParseError::Length {
                    what: "software report",
                    expected: REPORT_LEN,
                    found: evidence.report.len(),
                })?;
            UnparsedPublicKey::new(&ED25519, &p.public_key)
                .verify(signed, &p.signature)
                .map_err(|_| VerifyError::Signature("software report"))?;
            if p.report_data.as_slice() != expected_report_data {
                return Err(VerifyError::ReportDataMismatch);
            }
            rv.check_platform(Platform::Software)?;
            let mut c = Claims::new(Platform::Software, p.report_data.to_vec());
            c.measure("software.measurement", &p.measurement);
            c.host_data = Some(p.host_data.to_vec());
            c.debug = p.debug;
            c.chip_id = Some(p.public_key.to_vec());
            c.signing_key = Some("software-ed25519".into());
            rv.check_debug(&c)?;
            let key_pinned = match &rv.software.allowed_keys {
                None => false,
                Some(keys) if keys.iter().any(|k| k.as_slice() == p.public_key) => true,
                Some(_) => {
                    return Err(Rejection::SoftwareKeyNotAllowed(hex::encode(p.public_key)).into())
                }
            };
            let pinned = check_allowed(
                &rv.software.allowed_measurements,
                "software.measurement",
                &p.measurement,
            )?;
            let tv = TrustVector {
                instance_identity: if key_pinned {
                    TrustClaim::warning("pinned software key (no hardware root)")
                } else {
                    TrustClaim::contraindicated("unpinned software key")
                },
                configuration: if p.debug {
                    TrustClaim::warning("debug flag set")
                } else {
                    TrustClaim::affirming("debug flag clear")
                },
                executables: if pinned {
                    TrustClaim::affirming("measurement in the allow-list (self-reported)")
                } else {
                    TrustClaim::warning("measurement not pinned")
                },
                hardware: TrustClaim::contraindicated("software TEE: no hardware protection"),
                runtime_opaque: TrustClaim::contraindicated("memory visible to the host"),
                ..TrustVector::default()
            };
            Ok(Appraisal::new(
                c,
                vec![ComponentAppraisal::new("software-report", tv)],
                now,
            ))
        }
    }
}
