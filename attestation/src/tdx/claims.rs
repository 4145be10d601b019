//! The claims of a TDX quote as the check list fills them in (DESIGN.md keys): the TD report's fields once
//! the quote parses, then the FMSPC, revocation, TCB status and advisories as their steps decide them.

use super::quote::Quote;
use serde_json::{Map, Value, json};

/// The claims of one verification as they fill in.
pub(super) struct Claims {
    pub(super) map: Map<String, Value>,
    pub(super) simulated: bool,
}

impl Claims {
    /// No claims yet.
    pub(super) fn new() -> Self {
        Claims {
            map: Map::new(),
            simulated: false,
        }
    }
    /// Sets `key` to `value`.
    pub(super) fn set(&mut self, key: &str, value: Value) {
        self.map.insert(key.to_owned(), value);
    }
    /// The parsed quote's fields, and the later steps' keys as not yet decided.
    pub(super) fn quote(&mut self, q: &Quote<'_>) {
        let td = &q.td_report;
        fn h(bytes: &[u8]) -> String {
            hex::encode(bytes)
        }
        self.set("version", json!(q.header.version));
        if let Some(t) = q.body_type {
            self.set("body_type", json!(t));
        }
        self.set("tee_tcb_svn", json!(h(td.tee_tcb_svn)));
        self.set("mrseam", json!(h(td.mrseam)));
        self.set("mrsignerseam", json!(h(td.mrsignerseam)));
        self.set("seam_attributes", json!(h(td.seam_attributes)));
        self.set("td_attributes", json!(h(td.td_attributes)));
        self.set("debug", json!(td.debug()));
        self.set("xfam", json!(h(td.xfam)));
        self.set("mrtd", json!(h(td.mrtd)));
        self.set("mrconfigid", json!(h(td.mrconfigid)));
        self.set("mrowner", json!(h(td.mrowner)));
        self.set("mrownerconfig", json!(h(td.mrownerconfig)));
        for (i, r) in td.rtmr.iter().enumerate() {
            self.set(&format!("rtmr{i}"), json!(h(&r[..])));
        }
        self.set("report_data", json!(h(td.report_data)));
        if let Some(s) = td.tee_tcb_svn2 {
            self.set("tee_tcb_svn2", json!(h(s)));
        }
        if let Some(m) = td.mrservicetd {
            self.set("mrservicetd", json!(h(m)));
        }
        self.set("fmspc", Value::Null);
        self.set("tcb_status", Value::Null);
        self.set("advisory_ids", json!([]));
        self.set("revocation_checked", json!(false));
    }
}
