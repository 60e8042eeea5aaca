//! Judge a host.conf edit with a real YAML parser (yaml-rust2, YAML 1.2 like CloudPods' Go
//! reader): the text editor in [`super`] (hostconf) keeps bytes, this checks what they mean.

use yaml_rust2::{Yaml, YamlLoader};

use super::{HostConfError, KEY};

/// The one document of a host.conf as a mapping, or why it is not one vgpuctl can edit.
fn load(text: &str, what: &str) -> Result<yaml_rust2::yaml::Hash, HostConfError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| HostConfError::Unsupported {
        line: e.marker().line(),
        reason: format!("{what} is not valid YAML: {}", e.info()),
    })?;
    let unsupported = |reason: String| HostConfError::Unsupported { line: 1, reason };
    match docs.as_slice() {
        [] => Ok(Default::default()),
        [Yaml::Hash(h)] => Ok(h.clone()),
        [Yaml::Null] => Ok(Default::default()),
        [_] => Err(unsupported(format!("{what} is not a YAML mapping"))),
        _ => Err(unsupported(format!(
            "{what} holds {} YAML documents (---); CloudPods reads one",
            docs.len()
        ))),
    }
}

/// Check before anything is edited that `text` is one YAML mapping.
pub fn check_original(text: &str) -> Result<(), HostConfError> {
    load(text, "the file").map(|_| ())
}

/// `after` must hold exactly one `nvidia_vgpu_pfs` whose entries are the strings `want`
/// (compared as `norm` makes them), and every other key with its value as in `before`.
pub fn check_edit(
    before: &str,
    after: &str,
    want: &[String],
    norm: impl Fn(&str) -> String,
) -> Result<(), HostConfError> {
    let b = load(before, "the file")?;
    let a = load(after, "the edited file")?;
    let wrong = |reason: String| HostConfError::Unsupported { line: 1, reason };
    let key = Yaml::String(KEY.into());
    let mut got: Vec<String> = match a.get(&key) {
        Some(Yaml::Array(items)) => items
            .iter()
            .map(|i| match i {
                Yaml::String(s) => Ok(norm(s)),
                other => Err(wrong(format!(
                    "after the edit a {KEY} entry would read as {other:?}, not a string"
                ))),
            })
            .collect::<Result<_, _>>()?,
        None if want.is_empty() => Vec::new(),
        other => {
            return Err(wrong(format!(
                "after the edit {KEY} would read as {other:?}, not the list"
            )))
        }
    };
    got.sort();
    let mut w = want.to_vec();
    w.sort();
    if got != w {
        return Err(wrong(format!(
            "after the edit {KEY} would read as {got:?}, not {w:?}"
        )));
    }
    let others = |h: &yaml_rust2::yaml::Hash| {
        h.iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    if others(&a) != others(&b) {
        return Err(wrong(format!(
            "the edit would change keys other than {KEY} (an anchor or alias shared with it?)"
        )));
    }
    Ok(())
}
