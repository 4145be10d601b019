//! The claims of an SNP report (DESIGN.md, `cvm-attest verify --json`): lowercase hex for byte fields,
//! `0x`-prefixed 16-digit hex for 64-bit words, numbers for small integers.

use super::hcl::HclReport;
use super::report::{AttestationReport, Product, TcbLayout, TcbVersion};
use serde_json::{Map, Value, json};

fn word(v: u64) -> String {
    format!("{v:#018x}")
}

/// A TCB_VERSION as `{raw, fmc?, bootloader, tee, snp, microcode}`.
pub fn tcb_json(tcb: TcbVersion, layout: TcbLayout) -> Value {
    let p = tcb.parts(layout);
    let mut m = Map::new();
    m.insert("raw".into(), json!(word(tcb.0)));
    if let Some(fmc) = p.fmc {
        m.insert("fmc".into(), json!(fmc));
    }
    m.insert("bootloader".into(), json!(p.bootloader));
    m.insert("tee".into(), json!(p.tee));
    m.insert("snp".into(), json!(p.snp));
    m.insert("microcode".into(), json!(p.microcode));
    Value::Object(m)
}

/// What is known besides the report when the claims are written.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The product: from the verified chain, else from the report's CPUID fields.
    pub product: Option<Product>,
    /// The VLEK's cspID.
    pub csp_id: Option<String>,
    /// productName1 of the VCEK/VLEK.
    pub product_name: Option<String>,
    /// Whether a CRL was applied.
    pub revocation_checked: bool,
}

/// The claims object for `report` (and its HCL wrapper, if any).
pub fn claims(report: &AttestationReport<'_>, hcl: Option<&HclReport<'_>>, ctx: &Context) -> Value {
    let layout = ctx
        .product
        .map(Product::tcb_layout)
        .unwrap_or(TcbLayout::MilanGenoa);
    let policy = report.policy;
    let signer = report.signing_key();
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("version", json!(report.version.0));
    put("product", json!(ctx.product.map(Product::name)));
    put("signer", json!(signer.name().unwrap_or("unknown")));
    put("guest_svn", json!(report.guest_svn));
    put("policy", json!(word(policy.0)));
    put("debug", json!(policy.debug()));
    put(
        "policy_decoded",
        json!({
            "abi_major": policy.abi_major(),
            "abi_minor": policy.abi_minor(),
            "smt": policy.has(super::report::GuestPolicy::SMT),
            "migrate_ma": policy.has(super::report::GuestPolicy::MIGRATE_MA),
            "debug": policy.debug(),
            "single_socket": policy.has(super::report::GuestPolicy::SINGLE_SOCKET),
        }),
    );
    put("vmpl", json!(report.vmpl));
    put("measurement", json!(hex::encode(report.measurement)));
    put("report_data", json!(hex::encode(report.report_data)));
    put("host_data", json!(hex::encode(report.host_data)));
    put("family_id", json!(hex::encode(report.family_id)));
    put("image_id", json!(hex::encode(report.image_id)));
    put("id_key_digest", json!(hex::encode(report.id_key_digest)));
    put(
        "author_key_digest",
        json!(hex::encode(report.author_key_digest)),
    );
    put("report_id", json!(hex::encode(report.report_id)));
    put("report_id_ma", json!(hex::encode(report.report_id_ma)));
    put("chip_id", json!(hex::encode(report.chip_id)));
    put("reported_tcb", tcb_json(report.reported_tcb, layout));
    put("current_tcb", tcb_json(report.current_tcb, layout));
    put("committed_tcb", tcb_json(report.committed_tcb, layout));
    put("launch_tcb", tcb_json(report.launch_tcb, layout));
    put("current_version", json!(report.current_version.to_string()));
    put(
        "committed_version",
        json!(report.committed_version.to_string()),
    );
    put("platform_info", json!(word(report.platform_info.0)));
    put("signature_algo", json!(report.signature_algo.0));
    put(
        "flags",
        json!({
            "raw": format!("{:#010x}", report.flags.0),
            "author_key_en": u8::from(report.flags.author_key_en()),
            "mask_chip_key": u8::from(report.flags.mask_chip_key()),
            "signing_key": signer.name().map(str::to_uppercase).unwrap_or_else(|| format!("{:#x}", signer.0)),
        }),
    );
    if let Some(c) = report.cpuid {
        put("cpuid_fam_id", json!(format!("{:#04x}", c.family)));
        put("cpuid_mod_id", json!(format!("{:#04x}", c.model)));
        put("cpuid_step", json!(format!("{:#04x}", c.stepping)));
    }
    if let Some(v) = report.launch_mit_vector {
        put("launch_mit_vector", json!(word(v)));
    }
    if let Some(v) = report.current_mit_vector {
        put("current_mit_vector", json!(word(v)));
    }
    if let Some(name) = &ctx.product_name {
        put("vcek_product_name", json!(name));
    }
    if let Some(csp) = &ctx.csp_id {
        put("csp_id", json!(csp));
    }
    match hcl {
        None => put("evidence_format", json!("snp-report")),
        Some(h) => {
            put("evidence_format", json!("azure-hcl"));
            let digest = h.var_data_digest();
            let bound = digest
                .as_deref()
                .is_some_and(|d| report.report_data.starts_with(d));
            put(
                "azure_hcl",
                json!({
                    "version": h.version,
                    "runtime_data_hash_type": h.hash_type,
                    "runtime_data_digest": digest.map(hex::encode),
                    "runtime_data_bound": bound,
                    "runtime_data_len": h.var_data.len(),
                }),
            );
        }
    }
    put("revocation_checked", json!(ctx.revocation_checked));
    Value::Object(m)
}
