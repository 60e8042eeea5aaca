//! mdevctl definitions: `/etc/mdevctl.d/<parent>/<uuid>`, a JSON object such as
//! `{"mdev_type": "nvidia-575", "start": "auto", "attrs": []}` where `attrs` is an ordered list
//! of one-entry objects (`[{"assign_adapter": "5"}]`) written to the device after creation.
//! The file names the device (UUID) and its directory the parent. mdevctl itself writes them
//! with `serde_json::to_string_pretty` (mdevctl `src/mdev.rs`, `write_config`); [`render`]
//! produces the same bytes so `mdevctl list --defined` reads ours back unchanged.

use serde_json::{json, Map, Value};

use crate::pci::{check_mdev_parent, is_safe_name, is_uuid};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevctlDef {
    /// `0000:e8:00.4` (canonical when it is a PCI address) or another parent name (`mtty`).
    pub parent: String,
    /// Lower-case hyphenated UUID.
    pub uuid: String,
    pub mdev_type: String,
    /// mdevctl starts it when the parent appears (`start: auto`) or only on request (`manual`).
    pub autostart: bool,
    /// Attributes in order: (name, value).
    pub attrs: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("/etc/mdevctl.d/{parent}/{uuid}: {reason}")]
pub struct MdevctlError {
    pub parent: String,
    pub uuid: String,
    pub reason: String,
}

/// Parse one definition; `parent` and `uuid` are the directory and file names.
pub fn parse(parent: &str, uuid: &str, content: &str) -> Result<MdevctlDef, MdevctlError> {
    let err = |reason: String| MdevctlError {
        parent: parent.to_string(),
        uuid: uuid.to_string(),
        reason,
    };
    let parent_ok = check_mdev_parent(parent).map_err(err)?;
    if !is_uuid(uuid) {
        return Err(err("the file name is not a UUID".into()));
    }
    let v: Value = serde_json::from_str(content).map_err(|e| err(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| err("not a JSON object".into()))?;
    let mdev_type = obj
        .get("mdev_type")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing string \"mdev_type\"".into()))?;
    if !is_safe_name(mdev_type) {
        return Err(err(format!(
            "mdev_type {mdev_type:?} is not a plain type name"
        )));
    }
    let autostart = match obj.get("start").and_then(Value::as_str) {
        Some("auto") => true,
        Some("manual") => false,
        Some(other) => return Err(err(format!("start {other:?} is neither auto nor manual"))),
        None => return Err(err("missing string \"start\"".into())),
    };
    let mut attrs = Vec::new();
    match obj.get("attrs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let m = item
                    .as_object()
                    .filter(|m| m.len() == 1)
                    .ok_or_else(|| err(format!("attrs[{i}] is not a one-entry object")))?;
                let (k, val) = m.iter().next().expect("one entry");
                let val = val
                    .as_str()
                    .ok_or_else(|| err(format!("attrs[{i}].{k} is not a string")))?;
                if !is_safe_name(k) {
                    return Err(err(format!("attrs[{i}] name {k:?} is not a plain name")));
                }
                attrs.push((k.clone(), val.to_string()));
            }
        }
        Some(_) => return Err(err("\"attrs\" is not a list".into())),
    }
    Ok(MdevctlDef {
        parent: parent_ok,
        uuid: uuid.to_ascii_lowercase(),
        mdev_type: mdev_type.to_string(),
        autostart,
        attrs,
    })
}

/// The file content mdevctl would write for `def` (pretty JSON, keys sorted, no final newline).
pub fn render(def: &MdevctlDef) -> String {
    let attrs: Vec<Value> = def
        .attrs
        .iter()
        .map(|(k, v)| {
            let mut m = Map::new();
            m.insert(k.clone(), Value::String(v.clone()));
            Value::Object(m)
        })
        .collect();
    let v = json!({
        "mdev_type": def.mdev_type,
        "start": if def.autostart { "auto" } else { "manual" },
        "attrs": attrs,
    });
    serde_json::to_string_pretty(&v).expect("JSON of strings")
}

/// Root-relative path of a definition: `etc/mdevctl.d/<parent>/<uuid>`.
pub fn def_path(def: &MdevctlDef) -> String {
    format!("etc/mdevctl.d/{}/{}", def.parent, def.uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "242e5ea7-90e2-4d6e-afeb-a0b9a656c108";

    #[test]
    fn parses_the_reference_example() {
        let d = parse(
            "0000:e8:04.0",
            UUID,
            r#"{"mdev_type": "nvidia-575", "start": "auto", "attrs": []}"#,
        )
        .unwrap();
        assert_eq!(
            d,
            MdevctlDef {
                parent: "0000:e8:04.0".into(),
                uuid: UUID.into(),
                mdev_type: "nvidia-575".into(),
                autostart: true,
                attrs: vec![],
            }
        );
    }

    #[test]
    fn parses_what_mdevctl_writes() {
        // `mdevctl define -u ... -p 0.0.0000 -t vfio_ap-passthrough` then attributes, as
        // mdevctl writes the file (pretty JSON).
        let content = "{\n  \"attrs\": [\n    {\n      \"assign_adapter\": \"5\"\n    },\n    {\n      \"assign_domain\": \"0x47\"\n    }\n  ],\n  \"mdev_type\": \"vfio_ap-passthrough\",\n  \"start\": \"manual\"\n}";
        let d = parse("matrix", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", content).unwrap();
        assert!(!d.autostart);
        assert_eq!(
            d.attrs,
            vec![
                ("assign_adapter".to_string(), "5".to_string()),
                ("assign_domain".to_string(), "0x47".to_string())
            ]
        );
        assert_eq!(render(&d), content);
    }

    #[test]
    fn render_round_trips_and_uses_manual_for_export() {
        let d = MdevctlDef {
            parent: "0000:e8:00.4".into(),
            uuid: "2f82ee72-3ac5-4615-9c0b-327c12e8c83d".into(),
            mdev_type: "nvidia-555".into(),
            autostart: false,
            attrs: vec![],
        };
        let s = render(&d);
        assert_eq!(
            s,
            "{\n  \"attrs\": [],\n  \"mdev_type\": \"nvidia-555\",\n  \"start\": \"manual\"\n}"
        );
        assert_eq!(parse(&d.parent, &d.uuid, &s).unwrap(), d);
        assert_eq!(
            def_path(&d),
            "etc/mdevctl.d/0000:e8:00.4/2f82ee72-3ac5-4615-9c0b-327c12e8c83d"
        );
    }

    #[test]
    fn normalizes_parent_and_uuid_case() {
        let d = parse(
            "0000:E8:04.0",
            &UUID.to_uppercase(),
            r#"{"mdev_type":"nvidia-575","start":"auto"}"#,
        )
        .unwrap();
        assert_eq!(d.parent, "0000:e8:04.0");
        assert_eq!(d.uuid, UUID);
    }

    #[test]
    fn rejects_bad_definitions_with_the_file_named() {
        let ok = r#"{"mdev_type":"nvidia-575","start":"auto","attrs":[]}"#;
        let cases: &[(&str, &str, &str)] = &[
            ("..", UUID, ok),
            ("a/b", UUID, ok),
            ("0000:e8:04.0", "not-a-uuid", ok),
            ("0000:e8:04.0", UUID, "{"),
            ("0000:e8:04.0", UUID, "[]"),
            ("0000:e8:04.0", UUID, r#"{"start":"auto"}"#),
            (
                "0000:e8:04.0",
                UUID,
                r#"{"mdev_type":"../x","start":"auto"}"#,
            ),
            (
                "0000:e8:04.0",
                UUID,
                r#"{"mdev_type":"nvidia-575","start":"boot"}"#,
            ),
            ("0000:e8:04.0", UUID, r#"{"mdev_type":"nvidia-575"}"#),
            (
                "0000:e8:04.0",
                UUID,
                r#"{"mdev_type":"nvidia-575","start":"auto","attrs":{}}"#,
            ),
            (
                "0000:e8:04.0",
                UUID,
                r#"{"mdev_type":"nvidia-575","start":"auto","attrs":[{"a":1}]}"#,
            ),
            (
                "0000:e8:04.0",
                UUID,
                r#"{"mdev_type":"nvidia-575","start":"auto","attrs":[{"a":"1","b":"2"}]}"#,
            ),
            (
                "0000:e8:04.0",
                UUID,
                r#"{"mdev_type":"nvidia-575","start":"auto","attrs":[{"../x":"1"}]}"#,
            ),
        ];
        for (p, u, c) in cases {
            let e = parse(p, u, c).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/mdevctl.d/{p}/{u}: ")),
                "{e}"
            );
        }
    }
}
