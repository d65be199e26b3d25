//! Verified claims and the AR4SI-style trust vector. Only this crate constructs them.

use serde::Serialize;

use crate::evidence::Platform;
use crate::time::Timestamp;

fn hex_bytes<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn hex_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

/// A named measurement (launch digest, MRTD, RTMR, PCR …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Measurement {
    /// Claim name: `snp.measurement`, `tdx.mrtd`, `tdx.rtmr0`..`tdx.rtmr3`, `tdx.mrseam`,
    /// `pcr0`..`pcr23`, `software.measurement`.
    pub name: String,
    /// The value.
    #[serde(serialize_with = "hex_bytes")]
    pub value: Vec<u8>,
}

/// An SEV-SNP TCB version (SPL per component).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SnpTcb {
    /// FMC SPL (Turin and later).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl SnpTcb {
    /// A TCB version from its components (e.g. a minimum for [`crate::ReferenceValues`]; a
    /// value, not a claim: only verification puts one into [`Claims`]).
    pub fn new(fmc: Option<u8>, bootloader: u8, tee: u8, snp: u8, microcode: u8) -> Self {
        Self {
            fmc,
            bootloader,
            tee,
            snp,
            microcode,
        }
    }

    /// Components as (name, value) pairs, FMC only when present.
    pub fn components(&self) -> Vec<(&'static str, u8)> {
        let mut v = Vec::with_capacity(5);
        if let Some(f) = self.fmc {
            v.push(("fmc", f));
        }
        v.extend([
            ("bootloader", self.bootloader),
            ("tee", self.tee),
            ("snp", self.snp),
            ("microcode", self.microcode),
        ]);
        v
    }
}

/// TCB claims: SNP TCB versions, or TDX TCB status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TcbClaims {
    /// SNP REPORTED_TCB (what the VCEK is derived from).
    pub reported: Option<SnpTcb>,
    /// SNP COMMITTED_TCB.
    pub committed: Option<SnpTcb>,
    /// SNP CURRENT_TCB.
    pub current: Option<SnpTcb>,
    /// SNP LAUNCH_TCB.
    pub launch: Option<SnpTcb>,
    /// SNP firmware version (current build), `major.minor.build`.
    pub firmware: Option<String>,
    /// TDX TCB status from the collateral (`UpToDate`, `SWHardeningNeeded`, …).
    pub status: Option<String>,
    /// TDX advisory ids.
    pub advisory_ids: Vec<String>,
    /// TDX TEE_TCB_SVN.
    #[serde(serialize_with = "hex_opt")]
    pub tee_tcb_svn: Option<Vec<u8>>,
}

/// SEV-SNP report fields beyond the common claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SnpDetails {
    /// Report format version (2, 3, 5).
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// The raw guest POLICY.
    pub policy: u64,
    /// FAMILY_ID from the ID block.
    #[serde(serialize_with = "hex_bytes")]
    pub family_id: Vec<u8>,
    /// IMAGE_ID from the ID block.
    #[serde(serialize_with = "hex_bytes")]
    pub image_id: Vec<u8>,
    /// ID_KEY_DIGEST (SHA-384 of the ID key; zero without an ID block).
    #[serde(serialize_with = "hex_bytes")]
    pub id_key_digest: Vec<u8>,
    /// AUTHOR_KEY_DIGEST.
    #[serde(serialize_with = "hex_bytes")]
    pub author_key_digest: Vec<u8>,
    /// CPUID family, model, stepping (v3+ reports).
    pub cpuid: Option<(u8, u8, u8)>,
}

/// TDX quote fields beyond the common claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TdxDetails {
    /// Quote version (4, 5).
    pub quote_version: u16,
    /// TD_ATTRIBUTES (8 bytes, as in the quote).
    #[serde(serialize_with = "hex_bytes")]
    pub td_attributes: Vec<u8>,
    /// XFAM.
    #[serde(serialize_with = "hex_bytes")]
    pub xfam: Vec<u8>,
    /// MROWNER.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_owner: Vec<u8>,
    /// MROWNERCONFIG.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_owner_config: Vec<u8>,
    /// TEE_TCB_SVN2 (TDX 1.5 bodies).
    #[serde(serialize_with = "hex_opt")]
    pub tee_tcb_svn2: Option<Vec<u8>>,
}

/// The claims a policy can test. Read-only outside this crate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Claims {
    /// The platform.
    pub platform: Platform,
    /// The data the evidence binds: the 64 raw report-data bytes (SNP, TDX, software) or
    /// the TPM quote's nonce (Azure vTPM).
    #[serde(serialize_with = "hex_bytes")]
    pub report_data: Vec<u8>,
    /// Launch and runtime measurements, primary first.
    pub measurements: Vec<Measurement>,
    /// SNP HOST_DATA or TDX MRCONFIGID.
    #[serde(serialize_with = "hex_opt")]
    pub host_data: Option<Vec<u8>>,
    /// Whether the guest can be debugged (SNP policy DEBUG, TDX TD_ATTRIBUTES.DEBUG, or
    /// the software report's flag).
    pub debug: bool,
    /// SNP: whether the guest policy allows SMT on the host.
    pub smt_allowed: Option<bool>,
    /// SNP: whether a migration agent may be associated with the guest.
    pub migration_agent_allowed: Option<bool>,
    /// SNP: the VMPL that requested the report.
    pub vmpl: Option<u32>,
    /// TCB versions / status.
    pub tcb: TcbClaims,
    /// Processor family (`Milan`, `Genoa`, `Turin`) or TDX FMSPC.
    pub chip_family: Option<String>,
    /// Chip or platform identity: SNP CHIP_ID, TDX PPID, software public key.
    #[serde(serialize_with = "hex_opt")]
    pub chip_id: Option<Vec<u8>>,
    /// Which key signed the report (`VCEK`, `VLEK`, `PCK`, `software-ed25519`).
    pub signing_key: Option<String>,
    /// Azure: the HCL runtime data's `vm-configuration` object.
    pub vm_configuration: Option<serde_json::Value>,
    /// SEV-SNP details (SNP and Azure SNP evidence).
    pub snp: Option<SnpDetails>,
    /// TDX details (TDX and Azure TDX evidence).
    pub tdx: Option<TdxDetails>,
}

impl Claims {
    pub(crate) fn new(platform: Platform, report_data: Vec<u8>) -> Self {
        Self {
            platform,
            report_data,
            measurements: Vec::new(),
            host_data: None,
            debug: false,
            smt_allowed: None,
            migration_agent_allowed: None,
            vmpl: None,
            tcb: TcbClaims::default(),
            chip_family: None,
            chip_id: None,
            signing_key: None,
            vm_configuration: None,
            snp: None,
            tdx: None,
        }
    }

    pub(crate) fn measure(&mut self, name: impl Into<String>, value: &[u8]) {
        self.measurements.push(Measurement {
            name: name.into(),
            value: value.to_vec(),
        });
    }

    /// The measurement with this name.
    pub fn measurement(&self, name: &str) -> Option<&[u8]> {
        self.measurements
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value.as_slice())
    }
}

/// A trustworthiness tier (AR4SI / EAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Tier {
    /// No claim made.
    None,
    /// The verifier affirms this aspect.
    Affirming,
    /// Acceptable, with a caveat.
    Warning,
    /// The verifier advises against trusting this aspect.
    Contraindicated,
}

/// One trustworthiness claim: tier, AR4SI value and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TrustClaim {
    /// The tier.
    pub tier: Tier,
    /// The AR4SI numeric value (0 none, 2 affirming, 32.. warning, 96.. contraindicated).
    pub value: i8,
    /// Why, in a few words.
    pub reason: String,
}

impl TrustClaim {
    pub(crate) fn affirming(reason: impl Into<String>) -> Option<Self> {
        Some(Self {
            tier: Tier::Affirming,
            value: 2,
            reason: reason.into(),
        })
    }
    pub(crate) fn warning(reason: impl Into<String>) -> Option<Self> {
        Some(Self {
            tier: Tier::Warning,
            value: 32,
            reason: reason.into(),
        })
    }
    pub(crate) fn contraindicated(reason: impl Into<String>) -> Option<Self> {
        Some(Self {
            tier: Tier::Contraindicated,
            value: 96,
            reason: reason.into(),
        })
    }
}

/// The AR4SI trustworthiness vector. Absent claims were not assessed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct TrustVector {
    /// Is the attesting instance the one the key/chain says (genuine TEE identity)?
    pub instance_identity: Option<TrustClaim>,
    /// Is the configuration (policy bits, debug, TCB status) acceptable?
    pub configuration: Option<TrustClaim>,
    /// Are the measured executables the expected ones?
    pub executables: Option<TrustClaim>,
    /// File system integrity (not assessed by this crate).
    pub file_system: Option<TrustClaim>,
    /// Is the hardware genuine and its TCB acceptable?
    pub hardware: Option<TrustClaim>,
    /// Is runtime memory opaque to the host?
    pub runtime_opaque: Option<TrustClaim>,
    /// Is storage opaque (not assessed by this crate).
    pub storage_opaque: Option<TrustClaim>,
    /// Is sourced data trustworthy (not assessed by this crate).
    pub sourced_data: Option<TrustClaim>,
}

impl TrustVector {
    fn slots(&self) -> [(&'static str, &Option<TrustClaim>); 8] {
        [
            ("instance-identity", &self.instance_identity),
            ("configuration", &self.configuration),
            ("executables", &self.executables),
            ("file-system", &self.file_system),
            ("hardware", &self.hardware),
            ("runtime-opaque", &self.runtime_opaque),
            ("storage-opaque", &self.storage_opaque),
            ("sourced-data", &self.sourced_data),
        ]
    }

    /// The roll-up status: the worst tier among the assessed claims (`None` if none).
    pub fn status(&self) -> Tier {
        self.slots()
            .iter()
            .filter_map(|(_, c)| c.as_ref().map(|c| c.tier))
            .max()
            .unwrap_or(Tier::None)
    }

    /// Claim-by-claim merge of component vectors: the worst tier wins for each claim.
    pub(crate) fn merge(vectors: &[&TrustVector]) -> TrustVector {
        fn worst(a: &Option<TrustClaim>, b: &Option<TrustClaim>) -> Option<TrustClaim> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y.tier > x.tier {
                    y.clone()
                } else {
                    x.clone()
                }),
                (Some(x), None) | (None, Some(x)) => Some(x.clone()),
                (None, None) => None,
            }
        }
        let mut out = TrustVector::default();
        for v in vectors {
            out.instance_identity = worst(&out.instance_identity, &v.instance_identity);
            out.configuration = worst(&out.configuration, &v.configuration);
            out.executables = worst(&out.executables, &v.executables);
            out.file_system = worst(&out.file_system, &v.file_system);
            out.hardware = worst(&out.hardware, &v.hardware);
            out.runtime_opaque = worst(&out.runtime_opaque, &v.runtime_opaque);
            out.storage_opaque = worst(&out.storage_opaque, &v.storage_opaque);
            out.sourced_data = worst(&out.sourced_data, &v.sourced_data);
        }
        out
    }

    fn to_ear(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, c) in self.slots() {
            if let Some(c) = c {
                m.insert(name.to_owned(), serde_json::Value::from(c.value));
            }
        }
        serde_json::Value::Object(m)
    }
}

/// The appraisal of one component of the evidence (e.g. the SNP report and the vTPM
/// quote of Azure evidence), kept next to the rolled-up vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ComponentAppraisal {
    /// Component name (`snp-report`, `td-quote`, `hcl-report`, `vtpm-quote`,
    /// `software-report`).
    pub name: String,
    /// Its trust vector.
    pub trust_vector: TrustVector,
}

impl ComponentAppraisal {
    pub(crate) fn new(name: &str, trust_vector: TrustVector) -> Self {
        Self {
            name: name.to_owned(),
            trust_vector,
        }
    }
}

/// Evidence that verified, appraised against reference values. Only this crate can
/// construct one, so holding an `Appraisal` means verification succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Appraisal {
    claims: Claims,
    trust_vector: TrustVector,
    components: Vec<ComponentAppraisal>,
    verified_at: Timestamp,
}

impl Appraisal {
    /// Roll the components up (worst tier wins per claim) and seal the result.
    pub(crate) fn new(
        claims: Claims,
        components: Vec<ComponentAppraisal>,
        verified_at: Timestamp,
    ) -> Self {
        let refs: Vec<&TrustVector> = components.iter().map(|c| &c.trust_vector).collect();
        let trust_vector = TrustVector::merge(&refs);
        Self {
            claims,
            trust_vector,
            components,
            verified_at,
        }
    }

    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The rolled-up trust vector (worst tier per claim over the components).
    pub fn trust_vector(&self) -> &TrustVector {
        &self.trust_vector
    }

    /// Per-component results.
    pub fn components(&self) -> &[ComponentAppraisal] {
        &self.components
    }

    /// Overall status: the worst tier in the rolled-up vector.
    pub fn status(&self) -> Tier {
        self.trust_vector.status()
    }

    /// The verification time used.
    pub fn verified_at(&self) -> Timestamp {
        self.verified_at
    }

    /// The appraisal as an EAR (draft-ietf-rats-ear) claims set, unsigned: one submodule
    /// per evidence component plus `sojourn` with the rolled-up status and the claims.
    pub fn to_ear(&self) -> serde_json::Value {
        let status = |t: Tier| match t {
            Tier::None => "none",
            Tier::Affirming => "affirming",
            Tier::Warning => "warning",
            Tier::Contraindicated => "contraindicated",
        };
        let mut submods = serde_json::Map::new();
        for c in &self.components {
            submods.insert(
                c.name.clone(),
                serde_json::json!({
                    "ear.status": status(c.trust_vector.status()),
                    "ear.trustworthiness-vector": c.trust_vector.to_ear(),
                }),
            );
        }
        submods.insert(
            "sojourn".into(),
            serde_json::json!({
                "ear.status": status(self.status()),
                "ear.trustworthiness-vector": self.trust_vector.to_ear(),
                "ear.veraison.annotated-evidence": self.claims,
            }),
        );
        serde_json::json!({
            "eat_profile": "tag:github.com,2023:veraison/ear",
            "iat": self.verified_at.unix_secs(),
            "ear.verifier-id": {
                "developer": "sojourn",
                "build": concat!("sojourn-attestation ", env!("CARGO_PKG_VERSION")),
            },
            "submods": submods,
        })
    }
}
